"""Every benchmark in one command, at one size: the product next to psql (and rclone for transfers).

    .venv/bin/python bench/all.py                      # 2,000,000 rows (then 4,000,000) and a 1 GiB object
    .venv/bin/python bench/all.py --rows 200000 --mb 64  # a smoke run

Runs load_csv.py, export_csv.py, table_to_table.py, transfer.py and startup.py one after the other, each in
its own process, and prints their tables (ratios to the reference measured in the same run, peak RSS).
Needs psql, rclone and sshd (`apt-get install postgresql-client rclone openssh-server`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the table benchmarks (then twice that)")
    parser.add_argument("--mb", type=int, default=1024, help="size of the transferred object in MB")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each method and its reference, the fastest counted (start-up: its own 5)")
    args = parser.parse_args()
    repeats = ["--repeats", str(args.repeats)]
    runs = [("CSV -> table", ["load_csv.py", "--rows", str(args.rows), *repeats]),
            ("query -> CSV file", ["export_csv.py", "--rows", str(args.rows), *repeats]),
            ("table -> table", ["table_to_table.py", "--rows", str(args.rows), *repeats]),
            ("transfers", ["transfer.py", "--mb", str(args.mb), *repeats]),
            ("start-up", ["startup.py"])]
    failed = []
    for title, (script, *options) in runs:
        print(f"\n## {title} ({script})\n", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script), *options], check=False)
        if done.returncode:
            failed.append(script)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
