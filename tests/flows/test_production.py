"""Production Prefect: the deployment on pool `default`, a real process worker, runs triggered over HTTP.

The session's Prefect server (SQLite, loopback) serves the API; a `cai worker` process polls it.
Runs are created exactly as the platform's backend creates them: POST
/api/deployments/{id}/create_flow_run with {"parameters": {"connector_id": N}}.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from flows.store import catalog
from flows.store.run_records import find_run_by_flow_run, get_run

pytestmark = [pytest.mark.production, pytest.mark.slow]

CAI = str(Path(sys.executable).parent / "cai")


@pytest.fixture(scope="module")
def prefect_env(prefect_api: str, config_store: str) -> dict[str, str]:
    """Environment of worker and CLI processes: the session's Prefect API and config store."""
    return {**os.environ, "PREFECT_API_URL": prefect_api, "DATABASE_URL": config_store,
            "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "CAI_HEARTBEAT_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "300"}


@pytest.fixture(scope="module")
def deployment(prefect_env: dict[str, str]) -> str:
    """`cai deploy`, twice: the second call updates the same deployment."""
    first = subprocess.run([CAI, "deploy"], env=prefect_env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    again = subprocess.run([CAI, "deploy"], env=prefect_env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    found = r"^deployment ([0-9a-f-]{36}):"
    ids = [m[1] for out in (first.stdout, again.stdout) for m in re.finditer(found, out, re.M)]
    assert len(ids) == 2 and ids[0] == ids[1], (first.stdout, again.stdout)
    return ids[0]


class Worker:
    """A `cai worker --limit 4` process (and the flow-run processes it starts)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([CAI, "worker", "--limit", "4"], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def kill_hard(self) -> None:
        """kill -9 the worker and every process under it, like a machine dying."""
        assert self.proc is not None
        tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        for proc in tree:
            proc.kill()
        psutil.wait_procs(tree, timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # a process worker stops on SIGINT (STACK.md)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def worker(prefect_env: dict[str, str], deployment: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(prefect_env, tmp_path_factory.mktemp("worker") / "worker.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _api(method: str, url: str, **kwargs: Any) -> Any:
    """A raw HTTP call as a careful backend makes it: a busy server (503: SQLite locked) is asked again
    (4 more times, 0.5 s doubling, honouring Retry-After)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=4, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        response = session.request(method, url, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def _create_flow_run(api: str, deployment_id: str, connector_id: int, key: str | None = None) -> str:
    """What the platform's backend does (README: one idempotency key per trigger request, kept across retries)."""
    import uuid

    created = _api("POST", f"{api}/deployments/{deployment_id}/create_flow_run",
                   json={"parameters": {"connector_id": connector_id},
                         "idempotency_key": key or f"backend-{connector_id}-{uuid.uuid4()}"})
    return str(created["id"])


def _wait(api: str, flow_run_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _api("GET", f"{api}/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return dict(run)
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s")


def _sleeper(make_connector: Callable[..., int], config_store: str, out: Path, seconds: float, name: str) -> int:
    """A connector whose query takes `seconds` (pg_sleep), exported to a folder."""
    return make_connector("postgres", {"connection_string": config_store, "allow_superuser": True,
                                       "query": f"SELECT pg_sleep({seconds}) IS NULL AS slept, 1 AS n"},
                          "nfs", {"path": str(out)}, name=name)


def test_a_backend_triggered_run_runs_on_the_worker_and_records_its_flow_run(
    prefect_api: str, deployment: str, worker: Worker, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path,
) -> None:
    connector_id = _sleeper(make_connector, config_store, tmp_path, 0, "backend triggered")
    flow_run_id = _create_flow_run(prefect_api, deployment, connector_id)
    run = _wait(prefect_api, flow_run_id)
    assert run["state"]["type"] == "COMPLETED" and run["name"] == f"connector-{connector_id}"
    assert run["work_pool_name"] == "default" and run["work_queue_name"] == "default"
    record = find_run_by_flow_run(flow_run_id)
    assert record is not None and record["status"] == "success" and record["rows_ingested"] == 1
    assert record["heartbeat_at"] is not None
    wanted = f"connector {connector_id} (backend triggered)"
    messages: list[str] = []
    for _ in range(40):  # the flow-run process ships its logs in batches, some after the final state
        logs = _api("POST", f"{prefect_api}/logs/filter",
                    json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        messages = [log["message"] for log in logs]
        if any(wanted in m for m in messages):
            break
        time.sleep(0.5)
    assert any(wanted in m for m in messages), messages
    artifacts = _api("POST", f"{prefect_api}/artifacts/filter",
                     json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    assert [a["key"] for a in artifacts] == [f"connector-{connector_id}-load"]
    assert artifacts[0]["type"] == "table"


def test_cai_trigger_waits_and_prints_the_outcome(
    prefect_env: dict[str, str], worker: Worker, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path,
) -> None:
    good = _sleeper(make_connector, config_store, tmp_path, 0, "cli trigger")
    done = subprocess.run([CAI, "trigger", str(good), "--wait"], env=prefect_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "success" in done.stdout and "Prefect state COMPLETED" in done.stdout
    bad = make_connector("postgres", {"connection_string": config_store, "query": "DELETE FROM cai_connectors"},
                         "nfs", {"path": str(tmp_path)}, name="cli trigger bad")
    failed = subprocess.run([CAI, "trigger", str(bad), "--wait"], env=prefect_env, capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == 1 and "failed" in failed.stdout and "must be a SELECT" in failed.stdout
    assert "Prefect state FAILED" in failed.stdout  # the flow raised after closing the record


def test_a_repeated_trigger_with_its_idempotency_key_starts_one_run(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker,
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    """The backend re-sends a trigger whose answer it lost; `cai trigger --key` is repeated: one run each."""
    import uuid

    from flows.store.run_records import list_runs

    connector_id = _sleeper(make_connector, config_store, tmp_path, 0, "idempotent")
    key = f"backend-request-{uuid.uuid4()}"
    first = _create_flow_run(prefect_api, deployment, connector_id, key)
    assert _create_flow_run(prefect_api, deployment, connector_id, key) == first
    other = _create_flow_run(prefect_api, deployment, connector_id)  # a new request is a new run
    assert other != first
    cli_key = f"cli-{uuid.uuid4()}"
    cli_runs = []
    for _ in range(2):
        done = subprocess.run([CAI, "trigger", str(connector_id), "--key", cli_key], env=prefect_env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        cli_runs.append(re.search(r"flow run ([0-9a-f-]{36}) created", done.stdout)[1])  # type: ignore[index]
    assert cli_runs[0] == cli_runs[1] and cli_runs[0] not in (first, other)
    for flow_run_id in (first, other, cli_runs[0]):
        assert _wait(prefect_api, flow_run_id)["state"]["type"] == "COMPLETED"
    runs = _api("POST", f"{prefect_api}/flow_runs/filter",
                json={"deployments": {"id": {"any_": [deployment]}}, "limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    mine = [r for r in runs if r["parameters"].get("connector_id") == connector_id]
    assert len(mine) == 3, [r["id"] for r in mine]
    assert sorted(r["prefect_flow_run_id"] for r in list_runs(connector_id, 10)) == sorted([first, other, cli_runs[0]])


def test_runs_of_one_connector_never_overlap_while_other_connectors_run_alongside(
    prefect_api: str, deployment: str, worker: Worker, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path,
) -> None:
    one = _sleeper(make_connector, config_store, tmp_path / "one", 4, "serial")
    other = _sleeper(make_connector, config_store, tmp_path / "other", 4, "parallel")
    flow_runs = [_create_flow_run(prefect_api, deployment, cid) for cid in (one, one, other)]
    states = [_wait(prefect_api, fr)["state"]["type"] for fr in flow_runs]
    assert states == ["COMPLETED"] * 3
    first, second, third = (find_run_by_flow_run(fr) for fr in flow_runs)
    assert first and second and third
    a, b = sorted([first, second], key=lambda r: r["started_at"])
    assert b["started_at"] >= a["finished_at"], "two runs of one connector overlapped"
    overlaps = [r for r in (a, b) if r["started_at"] < third["finished_at"] and third["started_at"] < r["finished_at"]]
    assert overlaps, "runs of different connectors did not run in parallel"


def test_a_connector_cron_becomes_a_schedule_and_removing_it_removes_the_schedule(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, make_connector: Callable[..., int],
    tmp_path: Path,
) -> None:
    connector_id = make_connector("filesystem", {"path": str(tmp_path)}, "nfs", {"path": str(tmp_path / "o")})

    def schedules() -> list[dict[str, Any]]:
        listed = _api("GET", f"{prefect_api}/deployments/{deployment}/schedules")
        return [s for s in listed if s["parameters"].get("connector_id") == connector_id]

    with pytest.raises(ValueError, match="must be a cron expression"):
        catalog.set_schedule(connector_id, "every tuesday")
    catalog.set_schedule(connector_id, "15 2 * * *")
    subprocess.run([CAI, "deploy"], env=prefect_env, check=True, capture_output=True, timeout=180)
    [made] = schedules()
    assert made["schedule"]["cron"] == "15 2 * * *" and made["schedule"]["timezone"] == "UTC"
    assert made["parameters"] == {"connector_id": connector_id} and made["active"]
    catalog.set_schedule(connector_id, None)
    subprocess.run([CAI, "deploy"], env=prefect_env, check=True, capture_output=True, timeout=180)
    assert schedules() == []


def test_a_run_whose_worker_is_killed_is_closed_as_failed_by_the_sweep(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker,
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    connector_id = _sleeper(make_connector, config_store, tmp_path, 60, "killed mid-run")
    flow_run_id = _create_flow_run(prefect_api, deployment, connector_id)
    deadline = time.monotonic() + 120
    record = None
    while time.monotonic() < deadline:  # wait until the run is under way and beating
        record = find_run_by_flow_run(flow_run_id)
        if record and record["heartbeat_at"] and record["heartbeat_at"] > record["started_at"]:
            break
        time.sleep(0.5)
    assert record is not None and record["status"] == "started", record
    worker.kill_hard()
    try:
        time.sleep(4)  # past the stale threshold below: no heartbeat since the kill
        stale = {**prefect_env, "CAI_HEARTBEAT_STALE_SECONDS": "3"}
        doctor = subprocess.run([CAI, "doctor"], env=stale, capture_output=True, text=True, timeout=180)
        flat = " ".join(doctor.stdout.replace("│", " ").split())  # a long detail wraps inside its cell
        assert f"run {record['id']} (connector {connector_id})" in flat, doctor.stdout
        closed = get_run(record["id"])
        assert closed is not None and closed["status"] == "failed" and closed["finished_at"] is not None
        assert "worker stopped responding" in closed["log_summary"]
    finally:
        worker.start()  # later tests (and the fixture's teardown) get a live worker again


def test_doctor_reports_each_connector_source_and_destination_with_secrets_masked(
    prefect_env: dict[str, str], deployment: str, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path, reader: dict[str, Any],
) -> None:
    good = make_connector("filesystem", {"path": str(tmp_path)}, "postgres", {"connection_string": config_store},
                          name="doctor good")
    writer = make_connector("postgres", {"connection_string": config_store, "query": "SELECT 1"},
                            "nfs", {"path": str(tmp_path / "w")}, name="doctor writer")
    read_only = make_connector("postgres", {**reader, "query": "SELECT 1"}, "nfs", {"path": str(tmp_path / "r")},
                               name="doctor reader")
    bad = make_connector("postgres", {"host": "127.0.0.1", "port": 9, "database": "x", "username": "u",
                                      "password": "doctor-secret-42", "query": "SELECT 1"},
                         "nfs", {"path": str(tmp_path / "out")}, name="doctor bad")
    cleartext = make_connector("filesystem", {"path": str(tmp_path)}, "rest_api",
                               {"url": "http://127.0.0.1:9/upload", "auth_type": "bearer_token",
                                "token": {"secret": "env:DOCTOR_REST_TOKEN"}}, name="doctor http")
    done = subprocess.run([CAI, "doctor"], env={**prefect_env, "DOCTOR_REST_TOKEN": "doctor-token-77"},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1  # the unreachable source fails the report
    lines = done.stdout.splitlines()

    def line(label: str) -> str:
        return next(row for row in lines if label in row)

    assert "OK" in line("config database") and "OK" in line("prefect api") and "OK" in line("prefect deployment")
    assert "OK" in line(f"connector {good} (doctor good) source")
    assert "OK" in line(f"connector {good} (doctor good) destination")
    assert "FAIL" in line(f"connector {bad} (doctor bad) source")
    assert "Connection refused" in done.stdout.split(f"connector {bad} (doctor bad) source", 1)[1]
    assert "WARN" in line(f"connector {bad} (doctor bad) secrets") and "plaintext in source `password`" in done.stdout
    assert "OK" in line(f"connector {bad} (doctor bad) destination")
    assert "WARN" in line(f"connector {writer} (doctor writer) source") and "is a superuser" in done.stdout
    assert "OK" in line(f"connector {read_only} (doctor reader) source")
    assert "the login can only read" in done.stdout and "warning(s)" in done.stdout
    assert "doctor-secret-42" not in done.stdout + done.stderr
    assert "WARN" in line(f"connector {cleartext} (doctor http) destination transport")
    assert "sends credentials over plain http:// (`url`)" in " ".join(done.stdout.replace("│", " ").split())
    assert "doctor-token-77" not in done.stdout + done.stderr


def test_a_worker_killed_mid_move_loses_nothing_and_the_next_run_delivers_once(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker,
    make_connector: Callable[..., int], incoming: Path, sftp_server: dict[str, Any], tmp_path: Path,
) -> None:
    """kill -9 of the worker tree while a `move` uploads to SFTP: the source stays, no partial file
    under the final name; the next run finishes the job exactly once and says so."""
    from tests.netfaults import stalling_sftp

    data = os.urandom(4 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    folder = f"killed-{tmp_path.name}"
    proxy, stalling = stalling_sftp(sftp_server, tmp_path, folder)  # the upload stalls after 1 MB
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "move"}, "sftp", stalling,
                                  name="killed mid-move")
    try:
        flow_run_id = _create_flow_run(prefect_api, deployment, connector_id)
        assert proxy.cut.wait(120), "the upload never started"
        dead = find_run_by_flow_run(flow_run_id)
        assert dead is not None and dead["status"] == "started", dead
        worker.kill_hard()
        landed = sftp_server["root"] / folder
        assert [p.name for p in landed.iterdir() if not p.name.startswith(".")] == []  # only a hidden temp file
        assert (incoming / "scan.bin").read_bytes() == data
        proxy.heal()
        # the next run waits for the dead run's connector slot (its lease lapses after 60 s), sweeps the
        # dead record and moves the file again
        env = {**prefect_env, "CAI_HEARTBEAT_STALE_SECONDS": "3"}
        again = subprocess.run([CAI, "run", str(connector_id)], env=env, capture_output=True, text=True,
                               timeout=300, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "moved 1 of 1 file(s)" in again.stdout, again.stdout
        assert {p.name: p.read_bytes() for p in landed.iterdir()} == {"scan.bin": data}  # once, no temp file
        assert list(incoming.iterdir()) == []
        closed = get_run(dead["id"])
        assert closed is not None and closed["status"] == "failed"
        assert "worker stopped responding" in closed["log_summary"]
        # Prefect's view is right too: the dead run's flow run ended, not RUNNING for good.
        from prefect import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
        assert state is not None and state.type.value == "CRASHED", state
        assert f"closed run record {dead['id']} as failed" in (state.message or "")
    finally:
        proxy.close()
        worker.start()


def test_a_worker_stopped_as_a_pod_is_stops_its_run_within_the_grace_period_and_loses_nothing(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker,
    make_connector: Callable[..., int], incoming: Path, sftp_server: dict[str, Any], tmp_path: Path,
) -> None:
    """SIGTERM to `cai worker` (Kubernetes' rolling update) while a `move` uploads: the worker takes no new
    run, stops the one in flight after CAI_WORKER_STOP_SECONDS, and exits well before a 60 s grace period
    ends; the run's record is closed `failed` saying so, its Prefect flow run has ended, nothing is under
    the final name, the source is kept, and the next run, on another worker, delivers it once."""
    from prefect import get_client

    from tests.netfaults import stalling_sftp

    data = os.urandom(4 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    folder = f"stopped-{tmp_path.name}"
    proxy, stalling = stalling_sftp(sftp_server, tmp_path, folder)  # the upload stalls after 1 MB
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "move"}, "sftp", stalling,
                                  name="stopped mid-move")
    worker.stop()  # the pod about to be stopped is the only one polling
    pod = Worker({**prefect_env, "CAI_WORKER_STOP_SECONDS": "3"}, tmp_path / "pod.log")
    pod.start()
    try:
        flow_run_id = _create_flow_run(prefect_api, deployment, connector_id)
        assert proxy.cut.wait(120), "the upload never started"
        running = find_run_by_flow_run(flow_run_id)
        assert running is not None and running["status"] == "started", running
        assert pod.proc is not None
        stopped_at = time.monotonic()
        os.kill(pod.proc.pid, signal.SIGTERM)  # what Kubernetes sends the container's first process
        pod.proc.wait(60)
        took = time.monotonic() - stopped_at
        assert took < 3 + 15, f"the worker took {took:.0f} s to stop"
        log = (tmp_path / "pod.log").read_text()
        closed = get_run(running["id"])
        assert "taking no new runs" in log and "stopped 1 run(s) still in flight" in log, log[-3000:]
        assert closed is not None and closed["status"] == "failed", closed
        assert "its worker was shut down (SIGTERM)" in closed["log_summary"]
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
        assert state is not None and state.type.value == "CRASHED", state
        assert "its worker was shut down (SIGTERM)" in (state.message or "")
        landed = sftp_server["root"] / folder
        assert [p.name for p in landed.iterdir() if not p.name.startswith(".")] == []
        assert (incoming / "scan.bin").read_bytes() == data
        proxy.heal()
        again = subprocess.run([CAI, "run", str(connector_id)], env=prefect_env, capture_output=True, text=True,
                               timeout=300, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert {p.name: p.read_bytes() for p in landed.iterdir()} == {"scan.bin": data}  # once, no temp file
        assert list(incoming.iterdir()) == []
    finally:
        proxy.close()
        pod.stop()
        worker.start()


def test_a_run_pod_without_the_shared_store_fails_naming_it_and_starts_no_embedded_database(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker, tmp_path: Path,
) -> None:
    """A deployment's flow run whose process has no `DATABASE_URL` (a run pod without the Secret): the
    flow run fails naming it, and no embedded PostgreSQL starts inside the pod."""
    from prefect import get_client

    worker.stop()  # this run is executed here, as a run pod would, not picked up by the worker
    try:
        flow_run_id = _create_flow_run(prefect_api, deployment, 999)
        pod = {k: v for k, v in prefect_env.items() if k != "DATABASE_URL"}
        pod.update(PREFECT__FLOW_RUN_ID=flow_run_id, CAI_HOME=str(tmp_path / "pod"))
        done = subprocess.run([sys.executable, "-m", "flows.orchestration.warm"], env=pod, capture_output=True,
                              text=True, timeout=240, check=False)
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
        assert state is not None and state.type.value in ("FAILED", "CRASHED"), state
        assert "connector 999: a flow run of a deployment needs `DATABASE_URL`" in done.stdout + done.stderr
        assert not (tmp_path / "pod" / "pgdata").exists()
    finally:
        worker.start()


def test_secrets_echoed_to_a_run_on_the_worker_appear_in_no_log_record_or_prefect_database(
    prefect_api: str, deployment: str, worker: Worker, make_connector: Callable[..., int], incoming: Path,
    httpserver: Any,
) -> None:
    """The worker's own log and the flow-run process's Prefect logs, as well as the records."""
    import json

    import prefect.settings
    from werkzeug import Request, Response

    from tests.flows.test_faults import files_holding

    def echo(request: Request) -> Response:
        return Response(json.dumps(dict(request.headers)), status=401)

    httpserver.expect_request("/upload").respond_with_handler(echo)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    secrets = ["pw-worker-5521", "c3ZjLXdvcmtlcjpwdy13b3JrZXItNTUyMQ==", "api-key-worker-9034"]
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)}, "rest_api",
        {"url": httpserver.url_for("/upload"), "auth_type": "basic", "username": "svc-worker",
         "password": "pw-worker-5521", "headers": {"X-Api-Key": "api-key-worker-9034"}}, name="echo on worker")
    flow_run_id = _create_flow_run(prefect_api, deployment, connector_id)
    assert _wait(prefect_api, flow_run_id)["state"]["type"] == "FAILED"
    record = find_run_by_flow_run(flow_run_id)
    assert record is not None and "HTTP 401" in record["log_summary"], record
    logs: list[dict[str, Any]] = []
    for _ in range(40):  # the flow-run process ships its logs in batches
        logs = _api("POST", f"{prefect_api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}})
        if any("HTTP 401" in log["message"] for log in logs):
            break
        time.sleep(0.5)
    assert any("HTTP 401" in log["message"] for log in logs)  # the failure was logged, masked
    outputs = [json.dumps(record, default=str), json.dumps(logs), worker.log.read_text(errors="replace")]
    for output in outputs:
        for secret in secrets:
            assert secret not in output, f"`{secret}` leaked into: {output[:300]}"
    prefect_db = Path(prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1]).parent
    assert files_holding(prefect_db, secrets) == []
    assert files_holding(Path(os.environ["CAI_PIPELINES_DIR"]), secrets) == []


def test_prefect_deploy_from_the_repo_makes_the_same_deployment_as_cai_deploy(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, make_connector: Callable[..., int],
    config_store: str, tmp_path: Path,
) -> None:
    """`prefect deploy --all` (prefect.yaml) updates the deployment `cai deploy` made, field for field."""
    from flows.orchestration.deployment import ROOT

    connector_id = _sleeper(make_connector, config_store, tmp_path, 0, "prefect.yaml")
    catalog.set_schedule(connector_id, "0 3 * * *")
    done = subprocess.run([CAI, "deploy"], env=prefect_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    fields = ("id", "name", "entrypoint", "work_pool_name", "work_queue_name", "tags", "description", "pull_steps",
              "path", "parameter_openapi_schema", "job_variables")
    by_cai = _api("GET", f"{prefect_api}/deployments/{deployment}")
    done = subprocess.run([str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all"],
                          env={**prefect_env, "PWD": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    by_prefect = _api("GET", f"{prefect_api}/deployments/{deployment}")  # the same id: updated, not a second one
    assert {k: by_prefect.get(k) for k in fields} == {k: by_cai.get(k) for k in fields}
    assert by_prefect["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    schedules = {s["parameters"].get("connector_id") for s in by_prefect["schedules"]}
    assert connector_id in schedules  # prefect.yaml leaves the connectors' schedules to `cai deploy`
    catalog.set_schedule(connector_id, None)


def test_flow_runs_that_end_before_their_flow_begins_get_a_failed_record(
    prefect_api: str, prefect_env: dict[str, str], deployment: str, worker: Worker,
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    """A flow run crashed at submission or cancelled while waiting: the next run's sweep records it, once."""
    import datetime
    from uuid import UUID

    import psycopg
    from prefect import get_client
    from prefect.states import Cancelled, Crashed, Scheduled

    connector_id = _sleeper(make_connector, config_store, tmp_path, 0, "never began")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)  # no worker picks these up
    with get_client(sync_client=True) as client:
        crashed = client.create_flow_run_from_deployment(UUID(deployment), parameters={"connector_id": connector_id},
                                                         state=Scheduled(scheduled_time=later))
        client.set_flow_run_state(crashed.id, Crashed(message="Flow run infrastructure exited with non-zero "
                                                              "status code -9."), force=True)
        cancelled = client.create_flow_run_from_deployment(UUID(deployment),
                                                           parameters={"connector_id": connector_id},
                                                           state=Scheduled(scheduled_time=later))
        client.set_flow_run_state(cancelled.id, Cancelled(message="cancelled by the backend"), force=True)
    assert find_run_by_flow_run(str(crashed.id)) is None
    sweeper = _create_flow_run(prefect_api, deployment, connector_id)  # any run sweeps before it starts
    assert _wait(prefect_api, sweeper)["state"]["type"] == "COMPLETED"
    for flow_run, kind, message in ((crashed, "CRASHED", "non-zero status code -9"),
                                    (cancelled, "CANCELLED", "cancelled by the backend")):
        record = find_run_by_flow_run(str(flow_run.id))
        assert record is not None and record["status"] == "failed" and record["connector_id"] == connector_id
        assert f"ended {kind} before the run began" in record["log_summary"] and message in record["log_summary"]
        assert record["finished_at"] is not None
    done = subprocess.run([CAI, "doctor"], env=prefect_env, capture_output=True, text=True, timeout=180)
    assert "unrecorded flow runs" in done.stdout, done.stdout
    with psycopg.connect(config_store) as conn:
        counts = conn.execute("SELECT prefect_flow_run_id, count(*) FROM cai_connector_runs WHERE prefect_flow_run_id "
                              "= ANY(%s) GROUP BY 1", ([str(crashed.id), str(cancelled.id)],)).fetchall()
    assert sorted(c for _, c in counts) == [1, 1]  # recorded once, however many sweeps ran


def test_a_run_waiting_when_the_worker_starts_starts_warm(
    prefect_api: str, deployment: str, worker: Worker, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path,
) -> None:
    """`cai worker` polls only once its warm process listens, so a queued run never pays a cold start."""
    worker.stop()
    flow_run_id = _create_flow_run(prefect_api, deployment,
                                   _sleeper(make_connector, config_store, tmp_path, 0, "queued before the worker"))
    worker.start()
    assert _wait(prefect_api, flow_run_id)["state"]["type"] == "COMPLETED"
    record = find_run_by_flow_run(flow_run_id)
    assert record is not None and record["metrics"]["process_start"] == "warm", record


def test_runs_on_the_worker_start_warm(
    prefect_api: str, deployment: str, worker: Worker, make_connector: Callable[..., int], config_store: str,
    tmp_path: Path,
) -> None:
    """`cai worker` starts a warm process; the deployment's command hands each run to it (a fork, no imports)."""
    deadline = time.monotonic() + 120
    while True:  # this worker's warm process (an earlier test may have restarted the worker) is listening
        assert worker.proc is not None
        serving = [c.cmdline()[-1] for c in psutil.Process(worker.proc.pid).children() if "--serve" in c.cmdline()]
        if serving and os.path.exists(serving[0]):
            break
        assert time.monotonic() < deadline, worker.log.read_text(errors="replace")[-2000:]
        time.sleep(0.5)
    runs = [_create_flow_run(prefect_api, deployment, _sleeper(make_connector, config_store, tmp_path, 0, f"warm {i}"))
            for i in range(3)]
    for flow_run_id in runs:
        assert _wait(prefect_api, flow_run_id)["state"]["type"] == "COMPLETED"
        record = find_run_by_flow_run(flow_run_id)
        assert record is not None and record["status"] == "success"
        assert record["metrics"]["process_start"] == "warm", record["metrics"]
        # The fork's last log lines reach the API too (os._exit would skip Prefect's log drain).
        wanted = f"connector {record['connector_id']} (warm "
        messages: list[str] = []
        for _ in range(40):
            logs = _api("POST", f"{prefect_api}/logs/filter",
                        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
            messages = [log["message"] for log in logs]
            if any(wanted in m and "exported 1 rows" in m for m in messages):
                break
            time.sleep(0.5)
        assert any(wanted in m and "exported 1 rows" in m for m in messages), [m[:200] for m in messages]
    by_cai = _api("GET", f"{prefect_api}/deployments/{deployment}")
    assert by_cai["job_variables"]["command"] == "python -m flows.orchestration.warm"
