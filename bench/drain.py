"""Benchmark: a burst of connector runs drained through Prefect workers, as the platform's backend sends it.

One command sets everything up on this machine: a config store of its own, a Prefect server
(`cai server`: PostgreSQL; `--sqlite` for Prefect's default), `cai deploy`, N folder -> postgres
connectors each loading a 1,000-row CSV that psql wrote, and W `cai worker [--limit L]` processes. All N
triggers are sent at once (40 threads), each with an idempotency key and re-sent on 429/5xx as a
careful backend does. It waits until every flow run is final and prints: runs/min (first trigger to
last final state), start latency (pending -> running), refused triggers, flow runs without a run
record, overlapping runs of one connector, and the peak RSS of the worker process trees.

    .venv/bin/python bench/drain.py                         # 200 runs, W=1, cai worker's default slots
    .venv/bin/python bench/drain.py --runs 50 --workers 2 --limit 4 --poll 2
    .venv/bin/python bench/drain.py --sqlite                # Prefect's default database, for comparison
    .venv/bin/python bench/drain.py --cold                  # every run imports Prefect and dlt itself
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

BIN = Path(sys.executable).parent
CAI = str(BIN / "cai")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session() -> requests.Session:
    retry = Retry(total=4, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=64))
    return session


def _database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin)._replace(path="/" + name))


def scratch_store(admin: str, name: str, work: Path, rows: int, sample: Path) -> tuple[str, dict[str, str]]:
    """A fresh config store database (migrated) and the environment of `cai` commands using it, with
    psql's own CSV export of ``rows`` clinical rows written to ``sample``."""
    store = _database(admin, name)
    env = {**os.environ, "DATABASE_URL": store, "CAI_HOME": str(work / "home"), "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    subprocess.run([CAI, "init-db"], env=env, check=True, capture_output=True)
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("CREATE TABLE sample_source AS SELECT g AS id, lpad(g::text, 8, '0') AS mrn, "
                     "now() - g * interval '1 second' AS taken, (g * 1.25)::numeric(10,2) AS dose "
                     f"FROM generate_series(1, {rows}) g")
    subprocess.run(["psql", store, "-qc", f"\\copy sample_source to '{sample}' csv header"], check=True)
    return store, env


def _busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine spent busy so far (all cores, idle and iowait excluded)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _tree_cpu_seconds(pid: int) -> float:
    """CPU-seconds of a process and its descendants, the exited ones included (once reaped by their parent)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _postmaster() -> int | None:
    """The PostgreSQL server's main process (the parent of every backend) on this machine."""
    for proc in psutil.process_iter(["name", "ppid"]):
        try:
            if proc.info["name"] in ("postgres", "postmaster") and \
                    psutil.Process(proc.info["ppid"]).name() not in ("postgres", "postmaster"):
                return int(proc.pid)
        except psutil.Error:
            continue
    return None


def _peak_sampler(pids: list[int], stop: threading.Event, peak: list[float]) -> None:
    """peak[0]: RSS of the worker trees (shared pages counted in every process); peak[1]: the most memory
    one run's process held alone (USS: what it does not share with the warm process it forked from)."""
    while not stop.wait(0.2):
        total = 0
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                tree = proc.children(recursive=True)
                total += proc.memory_info().rss + sum(c.memory_info().rss for c in tree)
                for child in tree:
                    parent = child.parent()
                    if parent is not None and "--serve" in parent.cmdline():  # a run forked by the warm process
                        peak[1] = max(peak[1], child.memory_full_info().uss)
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total)


def wait_for_api(api: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the Prefect server answers `/health` (3 minutes at most); its log's tail if it never does."""
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{api}/health", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"Prefect server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop each process group started here: SIGINT, then SIGKILL after 30 s."""
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):  # gone already (or while being stopped): the next one
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="connectors triggered at once (one run each)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per connector's CSV")
    parser.add_argument("--workers", type=int, default=1, help="cai worker processes")
    parser.add_argument("--limit", type=int, default=None, help="flow runs per worker at once (default: cai worker's)")
    parser.add_argument("--poll", type=float, default=None, help="worker poll seconds (default: cai worker's)")
    parser.add_argument("--cold", action="store_true", help="workers without a warm process (cai worker --no-warm)")
    parser.add_argument("--sqlite", action="store_true", help="Prefect's default SQLite instead of PostgreSQL")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cai-drain-"))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    # N connectors, each a folder holding psql's own CSV of `rows` rows, loading into the store's database.
    sample = work / "sample.csv"
    store, env = scratch_store(args.dsn, "cai_drain_store", work, args.rows, sample)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.update(DATABASE_URL=store)
    from flows.store import catalog

    connectors = []
    for i in range(args.runs):
        folder = work / "in" / f"c{i}"
        folder.mkdir(parents=True)
        (folder / "labs.csv").write_bytes(sample.read_bytes())
        source = catalog.define_source(f"drain {i}", "filesystem", {"path": str(folder), "settle_seconds": 0})
        destination = catalog.define_destination(f"drain {i}", "postgres",
                                                 {"connection_string": store, "schema": "drain",
                                                  "table_name": f"labs_{i}"})
        connectors.append(catalog.create_connector(f"drain {i}", source, destination))

    server_cmd = ([str(BIN / "prefect"), "server", "start", "--port", str(port)] if args.sqlite
                  else [CAI, "server", "--port", str(port), "--database-url", _database(args.dsn, "cai_drain_prefect")])
    server_log = open(work / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(server_cmd, env=env, stdout=server_log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_api(api, server, work / "server.log")
        env["PREFECT_API_URL"] = api
        subprocess.run([CAI, "deploy"], env=env, check=True, capture_output=True)
        deployment = requests.get(f"{api}/deployments/name/run_connector_pipeline/connector-pipeline",
                                  timeout=30).json()["id"]
        for w in range(args.workers):
            log = open(work / f"worker{w}.log", "wb")  # noqa: SIM115
            limit = ["--limit", str(args.limit)] if args.limit else []
            poll = ["--poll", str(args.poll)] if args.poll else []
            workers.append(subprocess.Popen([CAI, "worker", *limit, *poll,
                                             "--no-warm" if args.cold else "--warm"],
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        time.sleep(3)  # the workers register and poll once
        deadline = time.monotonic() + 120
        while not args.cold and not all(b"serving" in (work / f"worker{w}.log").read_bytes()
                                        for w in range(args.workers)):
            if time.monotonic() > deadline:  # measured anyway: the first runs start cold
                print("warm processes not serving after 2 minutes", file=sys.stderr)
                break
            time.sleep(0.2)
        stop, peak = threading.Event(), [0.0, 0.0]
        sampler = threading.Thread(target=_peak_sampler, args=([w.pid for w in workers], stop, peak), daemon=True)
        sampler.start()

        session = _session()

        def trigger(connector_id: int) -> tuple[int, str]:
            try:
                response = session.post(f"{api}/deployments/{deployment}/create_flow_run", timeout=60,
                                        json={"parameters": {"connector_id": connector_id},
                                              "idempotency_key": f"drain-{connector_id}-{uuid.uuid4()}"})
            except requests.RequestException as exc:
                return 0, type(exc).__name__
            return response.status_code, response.json().get("id", "") if response.ok else response.text[:200]

        postmaster = _postmaster()
        parts = {"workers (cold runs included)": [w.pid for w in workers], "Prefect server": [server.pid],
                 "PostgreSQL": [postmaster] if postmaster else []}
        parts_before = {name: sum(_tree_cpu_seconds(pid) for pid in pids) for name, pids in parts.items()}
        busy_before = _busy_cpu_seconds()
        me = psutil.Process()
        own_before = sum(me.cpu_times()[:2])
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=40) as pool:
            answers = list(pool.map(trigger, connectors))
        triggered = time.monotonic() - started
        created = [flow_run for status, flow_run in answers if 200 <= status < 300]
        refused = len(answers) - len(created)
        final: dict[str, dict[str, Any]] = {}
        while len(final) < len(created) and time.monotonic() - started < 3600:
            runs = session.post(f"{api}/flow_runs/filter", timeout=60, json={
                "flow_runs": {"id": {"any_": [r for r in created if r not in final]},
                              "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]}}},
                "limit": 200}).json()
            for run in runs:
                final[run["id"]] = run
            time.sleep(1)
        drained = time.monotonic() - started
        busy = _busy_cpu_seconds() - busy_before
        own = sum(me.cpu_times()[:2]) - own_before
        parts_used = {name: sum(_tree_cpu_seconds(pid) for pid in pids) - parts_before[name]
                      for name, pids in parts.items()}
        stop.set()

        states = [r["state"]["type"] for r in final.values()]
        with psycopg.connect(store) as conn:
            recorded = {row[0]: row[1] for row in conn.execute(
                "SELECT prefect_flow_run_id, status FROM cai_connector_runs WHERE prefect_flow_run_id = ANY(%s)",
                (created,)).fetchall()}
            record_seconds = [row[0] for row in conn.execute(
                "SELECT extract(epoch FROM finished_at - started_at)::float FROM cai_connector_runs "
                "WHERE prefect_flow_run_id = ANY(%s) AND finished_at IS NOT NULL", (created,)).fetchall()]
            overlaps = conn.execute(
                "SELECT count(*) FROM cai_connector_runs a JOIN cai_connector_runs b "
                "ON a.connector_id = b.connector_id AND a.id < b.id "
                "AND a.started_at < b.finished_at AND b.started_at < a.finished_at").fetchone()[0]
        picked, started_running = [], []  # Scheduled -> Pending (the worker took it), Pending -> Running (the engine)
        for run_id in list(final)[:50]:
            history = session.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=60).json()
            at = {}
            for state in history:
                at.setdefault(state["type"], datetime.fromisoformat(state["timestamp"]))
            if {"SCHEDULED", "PENDING", "RUNNING"} <= set(at):
                picked.append((at["PENDING"] - at["SCHEDULED"]).total_seconds())
                started_running.append((at["RUNNING"] - at["PENDING"]).total_seconds())
        latencies = []
        for run in final.values():
            if run.get("start_time") and run.get("expected_start_time"):
                begin = datetime.fromisoformat(run["start_time"])
                expected = datetime.fromisoformat(run["expected_start_time"])
                latencies.append((begin - expected).total_seconds())
        flow_seconds = [
            (datetime.fromisoformat(r["end_time"]) - datetime.fromisoformat(r["start_time"])).total_seconds()
            for r in final.values() if r.get("start_time") and r.get("end_time")]
        database = "SQLite" if args.sqlite else "PostgreSQL"
        print(f"\n{args.runs} runs of {args.rows} rows; Prefect server on {database}; "
              f"W={args.workers} L={args.limit or 'default'} poll {args.poll or 'default'} s, "
              f"{'cold' if args.cold else 'warm'} starts; "
              f"{os.cpu_count()} cores")
        print(f"| triggers sent in | {triggered:.1f} s |")
        print(f"| drained in | {drained:.1f} s |")
        print(f"| runs/min | {len(final) / drained * 60:.1f} |")
        print("| final states | " + ", ".join(f"{s} {states.count(s)}" for s in sorted(set(states))) + " |")
        if latencies:
            print(f"| triggered -> running, median / p95 | {statistics.median(latencies):.1f} / "
                  f"{sorted(latencies)[int(len(latencies) * 0.95) - 1]:.1f} s |")
        if picked:
            print(f"| of which scheduled -> pending (waiting for a poll and a slot), median | "
                  f"{statistics.median(picked):.2f} s |")
            print(f"| of which pending -> running (the worker starts the run), median | "
                  f"{statistics.median(started_running):.2f} s |")
        if flow_seconds and record_seconds:
            print(f"| a flow run, running -> final, median | {statistics.median(flow_seconds):.2f} s |")
            print(f"| its run record, started -> finished (lock, config, data path, close), median | "
                  f"{statistics.median(record_seconds):.2f} s |")
        print(f"| trigger calls refused after retries | {refused} of {len(answers)} |")
        print(f"| flow runs without a run record | {len([r for r in created if r not in recorded])} |")
        print(f"| run records not success | {len([s for s in recorded.values() if s != 'success'])} |")
        print(f"| overlapping runs of one connector | {overlaps} |")
        print(f"| peak RSS of the worker process trees (shared pages counted in each process) | "
              f"{peak[0] / 2**20:.0f} MiB |")
        if peak[1]:
            print(f"| most memory of one run's process of its own (USS; the rest is shared with the warm process) | "
                  f"{peak[1] / 2**20:.0f} MiB |")
        print(f"| busy CPU-seconds per run, whole machine (worker, runs, Prefect server, PostgreSQL) | "
              f"{busy / max(len(final), 1):.2f} |")
        for name, used in parts_used.items():
            print(f"| of which {name} | {used / max(len(final), 1):.2f} |")
        print(f"| of which this script (triggers, polling for final states) | {own / max(len(final), 1):.2f} |")
        print(f"| of which the rest: warm runs (forks the kernel reaps), the OS | "
              f"{(busy - own - sum(parts_used.values())) / max(len(final), 1):.2f} |")
    finally:
        stop_all([*workers, server])


if __name__ == "__main__":
    main()
