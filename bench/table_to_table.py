"""Benchmark: a query's rows into a PostgreSQL table, against psql's own pipe in the same run.

Builds `lab_results` (bigint, numeric(10,3), boolean, timestamptz with microseconds, uuid, text with
commas, quotes, newlines and NULLs, an interval, a text[]) in a scratch database, then at N and 2N
rows measures `psql -c "\\copy (q) to stdout" | psql -c "\\copy t from stdin"` (the limit: PostgreSQL's
text both ways, into a table made with the same types) and this product's `sql_database -> postgres`
path (exact column types, PostgreSQL's COPY text into dlt's load package, dlt's COPY out of it). It
checks in SQL that the product's table has the source's column types and every value.

    .venv/bin/python bench/table_to_table.py [--rows 2000000]
"""

from __future__ import annotations

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
SELECT g::bigint AS result_id, 100000 + g % 50000 AS patient_id,
       (ARRAY['2345-7','718-7','2160-0','2823-3'])[1 + g % 4] AS loinc_code,
       round((random() * 400)::numeric, 3)::numeric(10,3) AS value, g % 7 = 0 AS abnormal,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '13.000123 seconds' AS collected_at,
       CASE g % 5 WHEN 0 THEN 'hemolyzed, repeat advised' WHEN 1 THEN '"critical" value called'
                  WHEN 2 THEN E'see note\\nfollow-up' WHEN 3 THEN '' ELSE NULL END AS comment,
       md5(g::text)::uuid AS specimen_id, (g % 90) * interval '1 minute' AS turnaround,
       ARRAY['lab', 'ward ' || (g % 9)] AS tags
FROM generate_series(1, {rows}) g
"""

PRODUCT = """
import sys, time
from flows.store.connector_config import ConnectorConfig
from flows.paths.tables import query_to_table
from cai_common import exit_without_final_collection
exit_without_final_collection()  # as `cai` and the flow do
dsn, query, table = sys.argv[1:4]
connector = ConnectorConfig.from_dict({"connector_id": 1, "connector_name": "bench", "source_type": "sql_database",
    "source_config": {"connection_string": dsn, "allow_superuser": True, "query": query},
    "destination_type": "postgres", "destination_config": {"connection_string": dsn, "schema": "bench_cai",
    "table_name": table, "write_disposition": "replace"}})
started = time.monotonic()
outcome = query_to_table(connector)
print(f"copied {outcome.rows} rows in {time.monotonic() - started:.2f} s")
"""

TYPES = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
         "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")


def main() -> None:
    parser = bench_arguments(__doc__ or "", "/tmp/cai-bench-t2t")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dsn = scratch_database(args.dsn, "cai_bench_t2t", BUILD.format(rows=int(2 * args.rows)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench_psql")
    # DATABASE_URL: the config store every connector run has (else the product would start an embedded one)
    env = {**os.environ, "CAI_HOME": str(args.work / "home"), "CAI_PIPELINES_DIR": str(args.work / "pipelines"),
           "DATABASE_URL": args.dsn}
    results = []
    for rows in (args.rows, 2 * args.rows):
        query = f"SELECT * FROM lab_results WHERE result_id <= {rows}"
        target = f"bench_psql.rows_{rows}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {target} (LIKE lab_results)")
        pipe = (f"psql '{dsn}' -X -q -c \"\\copy ({query}) to stdout\" | "
                f"psql '{dsn}' -X -q -c \"\\copy {target} from stdin\"")
        psqls, products = [], []
        for _ in range(args.repeats):  # alternating, each from a quiet disk; the product replaces its table
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {target}")
            settle(dsn)
            psqls.append(measure(["bash", "-o", "pipefail", "-c", pipe], env))
            settle(dsn)
            products.append(measure([str(BIN / "python"), "-c", PRODUCT, dsn, query, f"rows_{rows}"], env))
        psql, product = fastest(psqls), fastest(products)
        with psycopg.connect(dsn) as conn:
            same_types = (conn.execute(TYPES, (f"bench_cai.rows_{rows}",)).fetchall()
                          == conn.execute(TYPES, ("lab_results",)).fetchall())
            differing = conn.execute(
                f"SELECT count(*) FROM ((TABLE bench_cai.rows_{rows} EXCEPT ALL {query}) UNION ALL "
                f"({query} EXCEPT ALL TABLE bench_cai.rows_{rows})) d").fetchone()
        print(f"{rows} rows: same column types: {same_types}; rows differing from the source: {differing[0]}")
        assert same_types and differing == (0,), "the product's table differs from its source"
        found = re.search(r" in ([\d.]+) s", product.stdout)
        results.append(("psql \\copy to | psql \\copy from (limit)", rows, psql.seconds, None, psql.peak_rss_mb))
        results.append(("cai sql_database -> postgres", rows, product.seconds, float(found[1]) if found else None,
                        product.peak_rss_mb))
    psql_s = {r[1]: r[2] for r in results if r[0].startswith("psql")}
    print(f"\n{'method':42} {'rows':>9} {'wall s':>7} {'work s':>7} {'vs psql':>8} {'whole':>6} {'peak RSS MB':>12}")
    for name, rows, wall, work, rss in results:
        secs = work if work is not None else wall
        print(f"{name:42} {rows:>9} {wall:>7.2f} {(f'{work:.2f}' if work else '-'):>7} "
              f"{psql_s[rows] / secs:>7.2f}x {wall / psql_s[rows]:>5.2f}x {rss:>12.0f}")
    print(f"\nbest of {args.repeats} runs for psql and cai (alternating; peak RSS the highest). work s = the copy "
          "itself, timed inside the process after imports; vs psql uses it when present; whole = wall time as a "
          "multiple of psql's.")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cai_bench_t2t WITH (FORCE)")


if __name__ == "__main__":
    main()
