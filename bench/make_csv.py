"""Write a realistic clinical lab-results CSV of N rows (~170 bytes a row) exactly as psql writes it.

PostgreSQL makes the rows (`generate_series`) and psql's own `\\copy (...) to ... csv header` writes
the file: timestamptz with microseconds and an offset, numeric with its scale, `t`/`f` booleans,
quoted empty strings, NULLs as empty fields, quotes and newlines inside comments. That is what a
real export of event data looks like; the load benchmark reads nothing cleaner.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

QUERY = """
SELECT g AS result_id, 100000 + g % 50000 AS patient_id, 500000 + g / 3 AS encounter_id,
       (ARRAY['2345-7','718-7','2160-0','2823-3','6690-2','1742-6'])[1 + g % 6] AS loinc_code,
       (ARRAY['Glucose','Hemoglobin','Creatinine','Potassium','Leukocytes','ALT'])[1 + g % 6] AS test_name,
       round((0.5 + (g::bigint * 7919 % 399500) / 1000.0)::numeric, 3) AS value,
       (ARRAY['mg/dL','g/dL','mg/dL','mmol/L','10*3/uL','U/L'])[1 + g % 6] AS unit,
       (ARRAY['70-99','12.0-17.5','0.6-1.3','3.5-5.1','4.5-11.0','7-56'])[1 + g % 6] AS reference_range,
       g % 7 = 0 AS abnormal,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '13.000123 seconds' AS collected_at,
       (ARRAY['J. Müller','A. O''Neil','L. Nguyen','S. García','K. Okafor'])[1 + g % 5] AS performed_by,
       'SP-' || lpad(g::text, 10, '0') AS specimen_id,
       (ARRAY['Emergency Department','Internal Medicine','Cardiology Ward 3','Oncology Day Unit'])[1 + g % 4]
           AS department,
       CASE g % 7 WHEN 0 THEN 'hemolyzed sample, repeat advised' WHEN 1 THEN '"critical" value called to ward'
                  WHEN 2 THEN E'collected post-dialysis, see note\\nfollow-up ordered' WHEN 3 THEN ''
                  ELSE NULL END AS comment
FROM generate_series(1, {rows}) g
"""

DDL = """CREATE TABLE {t} (result_id bigint, patient_id bigint, encounter_id bigint, loinc_code text,
test_name text, value numeric(10,3), unit text, reference_range text, abnormal boolean,
collected_at timestamptz, performed_by text, specimen_id text, department text, comment text)"""
"""The source table's types, for psql's own load into a table of the same shape."""


def write(path: Path, rows: int, dsn: str) -> int:
    """Have psql write `rows` rows to `path` as `\\copy (...) to ... csv header`; returns bytes written."""
    query = " ".join(QUERY.format(rows=rows).split())
    partial = path.with_name(f".{path.name}.partial")  # a failed export never leaves a file under the final name
    subprocess.run(["psql", dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy ({query}) to '{partial}' csv header"], check=True)
    partial.rename(path)
    return path.stat().st_size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"{args.path}: {write(args.path, args.rows, args.dsn) / 1e6:.0f} MB")
