"""Benchmark: what starting costs. `cai --help`, `cai run` without and with a Prefect server, `cai trigger`.

One command sets everything up on this machine: a config store of its own, one folder -> postgres
connector loading a 1,000-row CSV that psql wrote (every run reloads it), then measures, each as its
own process and --repeats times (best and median printed):

- `cai --help`;
- `cai run N` with no Prefect API configured (direct execution: the same steps, no server);
- `cai run N` against a warm Prefect server (`cai server` on PostgreSQL, already answering);
- `cai trigger N` with an idle `cai worker` (its defaults: warm process, 1 s poll) until the run's
  record is closed.

"The work" is the run record's own time (started_at -> finished_at: lock, config, data path, close);
"over the work" is the process's wall time minus it. For a trigger, the time from starting
`cai trigger` to the record's finished_at.

    .venv/bin/python bench/startup.py [--repeats 5] [--rows 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drain import CAI, _database, _free_port, scratch_store, stop_all, wait_for_api  # noqa: E402


def _record(store: str, after: int) -> tuple[int, float, datetime] | None:
    """(id, seconds, finished_at) of the first closed run record with an id above ``after``."""
    with psycopg.connect(store) as conn:
        row = conn.execute("SELECT id, extract(epoch FROM finished_at - started_at)::float, finished_at, status "
                           "FROM cai_connector_runs WHERE id > %s AND finished_at IS NOT NULL ORDER BY id LIMIT 1",
                           (after,)).fetchone()
    if row is None:
        return None
    if row[3] != "success":
        raise SystemExit(f"run record {row[0]} ended {row[3]}")
    return int(row[0]), float(row[1]), row[2]


def _last_id(store: str) -> int:
    with psycopg.connect(store) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM cai_connector_runs").fetchone()[0])  # type: ignore[index]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.monotonic() - started


def _runs(cmd: list[str], env: dict[str, str], store: str, repeats: int) -> list[tuple[float, float]]:
    """(wall, record seconds) of each `cai run`."""
    measured = []
    for _ in range(repeats):
        before = _last_id(store)
        wall = _timed(cmd, env)
        record = _record(store, before)
        assert record is not None, "the run left no closed record"
        measured.append((wall, record[1]))
    return measured


def _row(name: str, walls: list[float], works: list[float] | None = None) -> None:
    if works is None:
        print(f"| {name} | {min(walls):.2f} / {statistics.median(walls):.2f} | | |")
        return
    over = [w - r for w, r in zip(walls, works, strict=True)]
    print(f"| {name} | {min(walls):.2f} / {statistics.median(walls):.2f} | "
          f"{min(works):.2f} / {statistics.median(works):.2f} | {min(over):.2f} / {statistics.median(over):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each (best and median shown)")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the connector's CSV")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cai-startup-"))
    folder = work / "in"
    folder.mkdir()
    store, env = scratch_store(args.dsn, "cai_startup_store", work, args.rows, folder / "labs.csv")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.update(DATABASE_URL=store)
    from flows.store import catalog

    source = catalog.define_source("startup", "filesystem", {"path": str(folder), "full_refresh": True,
                                                                 "settle_seconds": 0})
    destination = catalog.define_destination("startup", "postgres", {"connection_string": store, "schema": "startup"})
    connector = str(catalog.create_connector("startup", source, destination))

    print(f"{args.rows}-row folder -> postgres connector; {args.repeats} measurements each; {os.cpu_count()} cores")
    print("\n| | wall s, best / median | the work (run record) s | over the work s |")
    print("| --- | ---: | ---: | ---: |")
    _row("`cai --help`", [_timed([CAI, "--help"], env) for _ in range(args.repeats)])
    _timed([CAI, "run", connector], env)  # the first run creates the table
    direct = _runs([CAI, "run", connector], env, store, args.repeats)
    _row("`cai run`, no Prefect API (direct)", [w for w, _ in direct], [r for _, r in direct])

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([CAI, "server", "--port", str(port), "--database-url",
                               _database(args.dsn, "cai_startup_prefect")],
                              env=env, stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                              start_new_session=True)
    processes = [server]
    try:
        wait_for_api(api, server, work / "server.log")
        env["PREFECT_API_URL"] = api
        _timed([CAI, "run", connector], env)  # the server's first flow, deployment-free: warms its caches
        served = _runs([CAI, "run", connector], env, store, args.repeats)
        _row("`cai run`, warm Prefect server", [w for w, _ in served], [r for _, r in served])

        subprocess.run([CAI, "deploy"], env=env, check=True, capture_output=True)
        worker = subprocess.Popen([CAI, "worker"], env=env, stdout=open(work / "worker.log", "wb"),  # noqa: SIM115
                                  stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(worker)
        deadline = time.monotonic() + 120
        while b"serving" not in (work / "worker.log").read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"worker not serving: {(work / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(3)  # registered, polling, idle
        closed, works = [], []
        for _ in range(args.repeats + 1):
            before = _last_id(store)
            started = time.time()
            _timed([CAI, "trigger", connector], env)
            while (record := _record(store, before)) is None:
                if time.time() - started > 120:
                    log = (work / "worker.log").read_text()[-2000:]
                    raise SystemExit(f"no closed run record 120 s after the trigger: {log}")
                time.sleep(0.05)
            closed.append(record[2].timestamp() - started)
            works.append(record[1])
            time.sleep(2)  # idle again
        # the first trigger forks the warm process's first run (it preloads on demand): shown, not counted
        _row("`cai trigger` -> record closed, idle worker (first)", closed[:1], works[:1])
        _row("`cai trigger` -> record closed, idle worker", closed[1:], works[1:])
    finally:
        stop_all(list(reversed(processes)))
        with psycopg.connect(args.dsn, autocommit=True) as conn:  # the scratch databases go with the run
            for name in ("cai_startup_store", "cai_startup_prefect"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("\nwall = the whole process (start-up and imports included); for a trigger, from starting `cai trigger`")
    print("to the record's finished_at. The work = the run record's started_at -> finished_at.")


if __name__ == "__main__":
    main()
