"""Benchmark: loading a large clinical CSV into PostgreSQL, against psql's \\copy in the same run.

The file is psql's own `\\copy (...) to ... csv header` export (bench/make_csv.py: fractional-second
timestamps with offsets, numerics, quoted empty strings), as real exports are. Measures, at N and 2N
rows: psql `\\copy ... from` (the physical limit), this product's `cai load-csv` (the file streamed
into dlt's load package, typed from every value, COPY reading it), the same file loaded by a
folder -> postgres connector (`cai run`, direct: the run record, lock and config included), and the
transcoding path (a dialect COPY cannot read: pyarrow rewrites the file as psql's CSV first). Prints
throughput, the ratio to psql, and peak RSS of each.

    .venv/bin/python bench/load_csv.py [--rows 2000000] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measured, bench_arguments, fastest, measure, settle  # noqa: E402
from make_csv import DDL, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

ARROW_LOAD = """
import sys, time
from dlt_destinations.postgres import PostgresDestinationConfig
from dlt_sources.filesystem import FilesystemSourceConfig
from flows.paths.tables import load_csv_files
path, dsn = sys.argv[1], sys.argv[2]
# A NULL marker COPY cannot express sends the file through the transcoding path (pyarrow -> psql's CSV -> COPY).
source = FilesystemSourceConfig.parse({"path": str(__import__("pathlib").Path(path).parent),
    "file_pattern": __import__("pathlib").Path(path).name, "null_values": ["", "NULL"], "full_refresh": True,
    "settle_seconds": 0},
    connector_id=None, side="source")
target = PostgresDestinationConfig.parse({"connection_string": dsn, "schema": "bench_arrow",
    "write_disposition": "replace"}, connector_id=None, side="destination")
started = time.monotonic()
outcome = load_csv_files("bench_arrow", source, target)
print(f"loaded {outcome.rows} rows in {time.monotonic() - started:.2f} s")
"""


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def best(cmd: list[str], env: dict[str, str], dsn: str, repeats: int, reset_psql: bool = False) -> Measured:
    """The fastest of ``repeats`` runs by load time, each from a quiet disk (and a fresh psql target table),
    so background writes (checkpoints, autovacuum) left by the previous method do not decide the ratio;
    peak RSS is the highest of them."""
    runs = []
    for _ in range(repeats):
        if reset_psql:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS bench_psql")
                conn.execute(DDL.format(t="bench_psql"))
        settle(dsn)
        runs.append(measure(cmd, env))
    return fastest(runs, key=lambda m: load_seconds(m) or m.seconds)


def load_seconds(measured: Measured) -> float | None:
    """The load time a command printed ("... in 9.52 s"), i.e. without Python start-up and imports."""
    found = re.search(r" in ([\d.]+) s", measured.stdout)
    return float(found[1]) if found else None


def main() -> None:
    parser = bench_arguments(__doc__ or "", "/tmp/cai-bench")
    parser.add_argument("--skip-arrow", action="store_true", help="leave out the transcoding path")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cai_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE cai_bench")
    dsn = with_db(args.dsn, "cai_bench")
    env = {**os.environ, "CAI_HOME": str(args.work / "home"), "CAI_PIPELINES_DIR": str(args.work / "pipelines")}
    # A connector (folder -> postgres) run by `cai run` directly: its config store is this database.
    connector_env = {**env, "DATABASE_URL": dsn, "PREFECT_HOME": str(args.work / "prefect")}
    connector_env.pop("PREFECT_API_URL", None)
    subprocess.run([str(BIN / "cai"), "init-db"], env=connector_env, check=True, capture_output=True)
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = dsn
    from flows.store import catalog
    results = []
    for rows in (args.rows, 2 * args.rows):
        path = args.work / f"labs_psql_{rows}.csv"  # psql's own export: fractional-second timestamps
        if not path.exists():
            write(path, rows, dsn)
        mb = path.stat().st_size / 1e6
        psql = best(["psql", dsn, "-q", "-c", f"\\copy bench_psql from '{path}' csv header"], env, dsn, args.repeats,
                    reset_psql=True)
        results.append(("psql \\copy (limit)", rows, mb, psql.seconds, None, psql.peak_rss_mb))
        cai = best([str(BIN / "cai"), "load-csv", str(path), "--to", dsn, "--schema", "bench_cai", "--replace",
                    "--settle-seconds", "0"],
                   {**env, "COLUMNS": "200"}, dsn, args.repeats)
        results.append(("cai load-csv (this product)", rows, mb, cai.seconds, load_seconds(cai), cai.peak_rss_mb))
        source = catalog.define_source(f"bench {rows}", "filesystem", {
            "path": str(path.parent), "file_pattern": path.name, "full_refresh": True,
            "settle_seconds": 0})  # written whole before the timing: nothing to wait for
        destination = catalog.define_destination(f"bench {rows}", "postgres", {
            "connection_string": dsn, "schema": "bench_connector"})
        connector = catalog.create_connector(f"bench {rows}", source, destination)
        run = best([str(BIN / "cai"), "run", str(connector)], connector_env, dsn, args.repeats)
        results.append(("cai run, a connector (direct)", rows, mb, run.seconds, load_seconds(run), run.peak_rss_mb))
        if not args.skip_arrow:  # last: its long write burst would slow whatever runs after it
            settle(dsn)
            arrow = measure([str(BIN / "python"), "-c", ARROW_LOAD, str(path), dsn], env)
            results.append(("transcoded (pyarrow) -> COPY", rows, mb, arrow.seconds, load_seconds(arrow),
                            arrow.peak_rss_mb))
        with psycopg.connect(dsn) as conn:
            counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                      for t in ("bench_psql", f"bench_cai.labs_psql_{rows}", f"bench_connector.labs_psql_{rows}")]
        assert counts == [rows, rows, rows], f"row counts differ: {counts}"
    print(f"\n{'method':30} {'rows':>9} {'MB':>6} {'wall s':>7} {'load s':>7} {'MB/s':>7} "
          f"{'vs psql':>8} {'whole':>6} {'peak RSS MB':>12}")
    psql_s = {r[1]: r[3] for r in results if r[0].startswith("psql")}
    for name, rows, mb, wall, load, rss in results:
        secs = load if load is not None else wall
        print(f"{name:30} {rows:>9} {mb:>6.0f} {wall:>7.2f} {(f'{load:.2f}' if load else '-'):>7} "
              f"{mb / secs:>7.1f} {psql_s[rows] / secs:>7.2f}x {wall / psql_s[rows]:>5.2f}x {rss:>12.0f}")
    print(f"\nbest of {args.repeats} runs for psql and cai (peak RSS the highest). vs psql = psql time / this "
          "method's load time (in-process, after imports); whole = this method's wall time (Python start-up and "
          "imports included) as a multiple of psql's.")
    subprocess.run(["psql", args.dsn, "-q", "-c", "DROP DATABASE IF EXISTS cai_bench WITH (FORCE)"], check=False)


if __name__ == "__main__":
    main()
