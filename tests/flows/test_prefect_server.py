"""`cai server`: a Prefect server on PostgreSQL takes a burst of trigger calls without refusing one.

Prefect's default SQLite refused a quarter of a 110-trigger burst with 503 ("database is locked").
Here a real `cai server` keeps Prefect's tables in PostgreSQL (the test server, a database of its
own); 120 trigger calls arrive at once, 20 of them re-sent with their idempotency key as a backend
re-sends after a lost answer; every call is answered and exactly 100 flow runs exist.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

pytestmark = [pytest.mark.slow, pytest.mark.production]

CAI = str(Path(sys.executable).parent / "cai")
AUTH = "cai-backend:server-pass-5150"
BACKEND = requests.Session()
BACKEND.auth = tuple(AUTH.split(":", 1))  # type: ignore[assignment]  # the backend's HTTP Basic credentials


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_postgres(server_url: str) -> Iterator[str]:
    """A PostgreSQL server for Prefect's tables: the session's when it has `pg_trgm` (Prefect's migrations
    create it), else a cluster of Debian's full server (the embedded server ships no contrib extensions)."""
    with psycopg.connect(server_url) as conn:
        has_trgm = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").fetchone()
    if has_trgm:
        yield server_url
        return
    from tests.tlspg import plain_postgres

    with plain_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_prefect(
    prefect_postgres: str, config_store: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    from urllib.parse import urlsplit, urlunsplit

    server_url = prefect_postgres
    database = f"prefect_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + database))
    port = _free_port()
    home = tmp_path_factory.mktemp("prefect_home")
    # Locked down as a fleet runs it: Prefect's own API authentication on the server and every client.
    env = {**os.environ, "DATABASE_URL": config_store, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_API_AUTH_STRING": AUTH}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([CAI, "server", "--port", str(port), "--database-url", url], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                if requests.get(f"{api}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        client_env = {k: v for k, v in env.items() if k != "PREFECT_SERVER_API_AUTH_STRING"}
        yield {"api": api, "database_url": url, "env": {**client_env, "PREFECT_API_URL": api,
                                                         "PREFECT_API_AUTH_STRING": AUTH}}
    finally:
        os.killpg(server.pid, 2)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_cai_server_keeps_prefects_tables_in_postgresql(postgres_prefect: dict[str, Any]) -> None:
    with psycopg.connect(postgres_prefect["database_url"]) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
    assert {"flow_run", "deployment", "work_pool"} <= tables


def test_a_burst_of_triggers_with_retries_creates_exactly_one_run_per_request(
    postgres_prefect: dict[str, Any], make_connector: Any, tmp_path: Path,
) -> None:
    deployed = subprocess.run([CAI, "deploy"], env=postgres_prefect["env"], capture_output=True, text=True,
                              timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    api = postgres_prefect["api"]
    deployment = BACKEND.get(f"{api}/deployments/name/run_connector_pipeline/connector-pipeline", timeout=30).json()
    connector_id = make_connector("filesystem", {"path": str(tmp_path)}, "nfs", {"path": str(tmp_path / "out")},
                                  name="burst")
    keys = [f"backend-{uuid.uuid4()}" for _ in range(100)]
    requests_to_send = keys + keys[:20]  # 20 re-sent, as after a lost answer

    def trigger(key: str) -> tuple[int, str]:
        response = BACKEND.post(f"{api}/deployments/{deployment['id']}/create_flow_run", timeout=60,
                                 json={"parameters": {"connector_id": connector_id}, "idempotency_key": key})
        return response.status_code, response.json().get("id", "") if response.ok else response.text

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(trigger, requests_to_send))
    refused = [a for a in answers if a[0] >= 300]
    assert refused == [], refused[:3]
    by_key = dict(zip(requests_to_send, (a[1] for a in answers), strict=True))
    assert all(answers[i][1] == by_key[k] for i, k in enumerate(requests_to_send))  # a re-send got its run
    runs = BACKEND.post(f"{api}/flow_runs/filter", timeout=60,
                         json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 200}).json()
    assert len({r["id"] for r in runs}) == 100 == len(set(by_key.values()))


def test_the_api_answers_only_callers_with_its_auth_string(postgres_prefect: dict[str, Any]) -> None:
    """`PREFECT_SERVER_API_AUTH_STRING` on the server: no credentials or wrong ones get 401 (health
    probes excepted), the backend's and every `cai` client's (`PREFECT_API_AUTH_STRING`) get through."""
    api = postgres_prefect["api"]
    assert requests.get(f"{api}/health", timeout=10).ok  # Kubernetes' probes carry no credentials
    assert requests.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401
    assert requests.post(f"{api}/flow_runs/filter", json={}, auth=("cai-backend", "wrong"), timeout=10
                         ).status_code == 401
    assert BACKEND.post(f"{api}/flow_runs/filter", json={}, timeout=10).ok
    doctor = subprocess.run([CAI, "doctor"], env={**postgres_prefect["env"], "COLUMNS": "200"}, capture_output=True,
                            text=True, timeout=180)
    assert any("prefect deployment" in line and "OK" in line for line in doctor.stdout.splitlines()), doctor.stdout
    anonymous = {k: v for k, v in postgres_prefect["env"].items() if k != "PREFECT_API_AUTH_STRING"}
    refused = subprocess.run([CAI, "doctor"], env={**anonymous, "COLUMNS": "200"}, capture_output=True,
                             text=True, timeout=180)
    assert any("prefect deployment" in line and "FAIL" in line for line in refused.stdout.splitlines()), refused.stdout
    assert "401" in refused.stdout
    assert "server-pass-5150" not in doctor.stdout + refused.stdout
