"""Write a realistic clinical lab-results CSV of N rows (~165 bytes a row) for the load benchmark."""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

HEADER = ("result_id,patient_id,encounter_id,loinc_code,test_name,value,unit,reference_range,"
          "abnormal,collected_at,performed_by,specimen_id,department,comment\n")
TESTS = [("2345-7", "Glucose", "mg/dL", "70-99"), ("718-7", "Hemoglobin", "g/dL", "12.0-17.5"),
         ("2160-0", "Creatinine", "mg/dL", "0.6-1.3"), ("2823-3", "Potassium", "mmol/L", "3.5-5.1"),
         ("6690-2", "Leukocytes", "10*3/uL", "4.5-11.0"), ("1742-6", "ALT", "U/L", "7-56")]
COMMENTS = ["", "", "", "hemolyzed sample, repeat advised", '"critical" value called to ward',
            "collected post-dialysis, see note\nfollow-up ordered", "Patient fasting, 8h"]
DEPTS = ["Emergency Department", "Internal Medicine", "Cardiology Ward 3", "Oncology Day Unit"]
STAFF = ["J. Müller", "A. O'Neil", "L. Nguyen", "S. García", "K. Okafor"]


def write(path: Path, rows: int, seed: int = 11) -> int:
    """Write `rows` rows to `path`; returns bytes written."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    lines = []
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        for i in range(1, rows + 1):
            loinc, name, unit, ref = TESTS[i % len(TESTS)]
            comment = COMMENTS[rng.randrange(len(COMMENTS))]
            if comment:
                comment = '"' + comment.replace('"', '""') + '"'
            ts = (start + timedelta(seconds=i * 13)).isoformat().replace("+00:00", "Z")
            lines.append(f"{i},{100000 + i % 50000},{500000 + i // 3},{loinc},{name},{rng.uniform(0.5, 400):.3f},"
                         f"{unit},{ref},{'true' if i % 7 == 0 else 'false'},{ts},{STAFF[i % len(STAFF)]},"
                         f"SP-{i:010d}-{loinc},{DEPTS[i % len(DEPTS)]},{comment}\n")
            if len(lines) == 10000:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))
    return path.stat().st_size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    print(f"{args.path}: {write(args.path, args.rows) / 1e6:.0f} MB")
