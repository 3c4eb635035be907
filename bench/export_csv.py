"""Benchmark: exporting a query to a CSV file, against psql's \\copy (query) to in the same run.

Builds a table of 2N realistic rows, then at N and 2N rows measures psql `\\copy (query) to` (the
physical limit), the approach this product replaces (a psycopg2 server-side cursor + csv.writer),
and this product's export path (the `sql_database` -> `nfs` data path: PostgreSQL's COPY streamed
through a dlt resource into a dlt file destination). Prints throughput, ratios and peak RSS, and checks
that the product's file is byte-identical to psql's.

    .venv/bin/python bench/export_csv.py [--rows 2000000]
"""

from __future__ import annotations

import filecmp
import os
import re
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_arguments, fastest, measure, scratch_database, settle  # noqa: E402

BIN = Path(sys.executable).parent

BUILD = """
CREATE TABLE lab_results AS
SELECT g AS result_id, 100000 + g % 50000 AS patient_id, 500000 + g / 3 AS encounter_id,
       (ARRAY['2345-7','718-7','2160-0','2823-3'])[1 + g % 4] AS loinc_code,
       (ARRAY['Glucose','Hemoglobin','Creatinine','Potassium'])[1 + g % 4] AS test_name,
       round((random() * 400)::numeric, 3) AS value, g % 7 = 0 AS abnormal,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '13.000123 seconds' AS collected_at,
       (ARRAY['J. Müller','A. O''Neil','L. Nguyen'])[1 + g % 3] AS performed_by,
       CASE g % 5 WHEN 0 THEN 'hemolyzed, repeat advised' WHEN 1 THEN '"critical" value called'
                  WHEN 2 THEN E'see note\\nfollow-up' ELSE NULL END AS comment,
       md5(g::text)::uuid AS specimen_id
FROM generate_series(1, {rows}) g
"""

OLD_WAY = """
import csv, sys, time, psycopg2
dsn, query, out = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.monotonic()
with psycopg2.connect(dsn) as conn, conn.cursor(name="old_export") as cursor, open(out, "w", newline="") as f:
    cursor.itersize = 10000
    cursor.execute(query)
    rows = iter(cursor)
    first = next(rows, None)  # a named cursor describes its columns only after the first fetch
    writer = csv.writer(f)
    writer.writerow([c.name for c in cursor.description])
    if first is not None:
        writer.writerow(first)
    for row in rows:
        writer.writerow(row)
print(f"exported in {time.monotonic() - started:.2f} s")
"""

PRODUCT = """
import sys, time
from flows.store.connector_config import ConnectorConfig
from flows.paths.exports import query_to_files
from cai_common import exit_without_final_collection
exit_without_final_collection()  # as `cai` and the flow do
dsn, query, folder, name = sys.argv[1:5]
connector = ConnectorConfig.from_dict({"connector_id": 1, "connector_name": "bench", "source_type": "sql_database",
    "source_config": {"connection_string": dsn, "allow_superuser": True, "query": query, "csv_filename": name},
    "destination_type": "nfs", "destination_config": {"path": folder}})
started = time.monotonic()
outcome = query_to_files(connector)
print(f"exported {outcome.rows} rows in {time.monotonic() - started:.2f} s")
"""


def main() -> None:
    parser = bench_arguments(__doc__ or "", "/tmp/cai-bench-export")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dsn = scratch_database(args.dsn, "cai_bench_export", BUILD.format(rows=int(2 * args.rows)))
    # DATABASE_URL: the config store every connector run has (else the product would start an embedded one)
    env = {**os.environ, "CAI_HOME": str(args.work / "home"), "CAI_PIPELINES_DIR": str(args.work / "pipelines"),
           "DATABASE_URL": args.dsn}
    results = []
    for rows in (args.rows, 2 * args.rows):
        query = f"SELECT * FROM lab_results WHERE result_id <= {rows} ORDER BY result_id"
        psql_out, old_out = args.work / f"psql_{rows}.csv", args.work / f"old_{rows}.csv"
        psqls, products = [], []
        for _ in range(args.repeats):  # alternating, each from a quiet disk
            settle(dsn)
            psqls.append(measure(["psql", dsn, "-X", "-q", "-c", f"\\copy ({query}) to '{psql_out}' csv header"], env))
            settle(dsn)
            products.append(measure([str(BIN / "python"), "-c", PRODUCT, dsn, query, str(args.work / "product"),
                                     f"product_{rows}.csv"], env))
        psql, product = fastest(psqls), fastest(products)
        settle(dsn)
        old = measure([str(BIN / "python"), "-c", OLD_WAY, dsn, query, str(old_out)], env)  # 5x psql: once
        mb = psql_out.stat().st_size / 1e6
        identical = filecmp.cmp(psql_out, args.work / "product" / f"product_{rows}.csv", shallow=False)
        for name, m in (("psql \\copy to (limit)", psql), ("psycopg2 cursor + csv.writer (old)", old),
                        ("cai export (this product)", product)):
            found = re.search(r" in ([\d.]+) s", m.stdout)
            results.append((name, rows, mb, m.seconds, float(found[1]) if found else None, m.peak_rss_mb))
        print(f"{rows} rows: product file identical to psql's: {identical}")
        assert identical, "the product's CSV differs from psql's"
    psql_s = {r[1]: r[3] for r in results if r[0].startswith("psql")}
    print(f"\n{'method':36} {'rows':>9} {'MB':>6} {'wall s':>7} {'work s':>7} {'MB/s':>7} {'vs psql':>8} "
          f"{'whole':>6} {'peak RSS MB':>12}")
    for name, rows, mb, wall, work, rss in results:
        secs = work if work is not None else wall
        print(f"{name:36} {rows:>9} {mb:>6.0f} {wall:>7.2f} {(f'{work:.2f}' if work else '-'):>7} "
              f"{mb / secs:>7.1f} {psql_s[rows] / secs:>7.2f}x {wall / psql_s[rows]:>5.2f}x {rss:>12.0f}")
    print(f"\nbest of {args.repeats} runs for psql and cai (alternating; peak RSS the highest). work s = the export "
          "itself, timed inside the process after imports; vs psql uses it when present; whole = wall time as a "
          "multiple of psql's.")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cai_bench_export WITH (FORCE)")


if __name__ == "__main__":
    main()
