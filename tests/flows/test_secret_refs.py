"""Secrets by reference: `{"secret": "env:NAME"}` and `{"secret": "prefect:BLOCK"}` in any config string."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from tests.flows.test_faults import files_holding

pytestmark = pytest.mark.slow


def _recording(httpserver: Any, status: int = 201) -> list[dict[str, str]]:
    """The server keeps each request's headers and answers them back (an echoing server, the worst case)."""
    from werkzeug import Request, Response

    seen: list[dict[str, str]] = []

    def handle(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(json.dumps(dict(request.headers)), status=status)

    httpserver.expect_request("/upload").respond_with_handler(handle)
    return seen


def test_env_references_resolve_in_the_worker_and_are_masked_everywhere(
    make_connector: Callable[..., int], incoming: Path, httpserver: Any, config_store: str, tmp_path: Path,
) -> None:
    """A direct `cai run`: the values reach the server; terminal, runs.log, record and pipelines stay clean."""
    from flows.store.run_records import list_runs
    from tests.flows.test_cli import CAI

    seen = _recording(httpserver, status=403)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    names = {"user": f"CAI_REF_USER_{uuid.uuid4().hex[:6]}", "password": f"CAI_REF_PW_{uuid.uuid4().hex[:6]}",
             "token": f"CAI_REF_TOKEN_{uuid.uuid4().hex[:6]}"}
    values = {"user": "svc-by-reference", "password": "pw-by-reference-4471", "token": "token-by-reference-9032"}
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)}, "rest_api",
        {"url": httpserver.url_for("/upload"), "auth_type": "basic",
         "username": {"secret": f"env:{names['user']}"}, "password": {"secret": f"env:{names['password']}"},
         "headers": {"X-Token": {"secret": f"env:{names['token']}"}}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({names[k]: values[k] for k in names})
    env.update(DATABASE_URL=config_store, CAI_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"),
               COLUMNS="400")
    env.pop("CAI_PIPELINES_DIR", None)
    done = subprocess.run([CAI, "run", str(connector_id)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1 and "HTTP 403" in done.stdout, done.stdout + done.stderr
    basic = base64.b64encode(f"{values['user']}:{values['password']}".encode()).decode()
    assert seen and seen[0]["Authorization"] == f"Basic {basic}" and seen[0]["X-Token"] == values["token"]
    secrets = [*values.values(), basic]
    record = json.dumps(list_runs(connector_id, 1), default=str)
    for output in (done.stdout + done.stderr, record):
        for secret in secrets:
            assert secret not in output, f"`{secret}` leaked into: {output[:300]}"
    assert files_holding(tmp_path / "home", secrets) == []
    with psycopg.connect(config_store) as conn:  # the store keeps the reference, never the value
        stored = conn.execute("SELECT d.config FROM cai_connectors c JOIN cai_defined_destinations d "
                              "ON d.id = c.defined_destination_id WHERE c.id = %s", (connector_id,)).fetchone()
    assert stored is not None and stored[0]["password"] == {"secret": f"env:{names['password']}"}


def test_a_missing_reference_fails_the_run_naming_connector_field_and_reference(
    make_connector: Callable[..., int], incoming: Path, httpserver: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.orchestration.run import run_directly
    from flows.store.run_records import get_run

    seen = _recording(httpserver)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    monkeypatch.delenv("CAI_NOT_SET_ANYWHERE", raising=False)
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "move"}, "rest_api",
                                  {"url": httpserver.url_for("/upload"), "auth_type": "bearer_token",
                                   "token": {"secret": "env:CAI_NOT_SET_ANYWHERE"}})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_directly(connector_id)
    summary = caught.value.result["log_summary"]
    assert (f"connector {connector_id}: destination `token` refers to `env:CAI_NOT_SET_ANYWHERE`, which is not set"
            in summary), summary
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert seen == [] and (incoming / "labs.csv").exists()

    malformed = make_connector("filesystem", {"path": str(incoming)}, "rest_api",
                               {"url": httpserver.url_for("/upload"), "auth_type": "bearer_token",
                                "token": {"secret": "vault:tokens/x"}})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_directly(malformed)
    assert 'destination `token` must be a secret reference like {"secret": "env:NAME"}' in (
        caught.value.result["log_summary"])


@pytest.mark.usefixtures("prefect_api")
def test_a_prefect_secret_block_resolves_on_a_real_prefect_server(
    make_connector: Callable[..., int], incoming: Path, httpserver: Any,
) -> None:
    from prefect.blocks.system import Secret

    from flows.dlt_pipeline_flow import run_connector_pipeline
    from flows.store.run_records import get_run

    seen = _recording(httpserver)
    block = f"cai-token-{uuid.uuid4().hex[:8]}"
    Secret(value="token-from-prefect-5521").save(block)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "copy"}, "rest_api",
                                  {"url": httpserver.url_for("/upload"), "auth_type": "bearer_token",
                                   "token": {"secret": f"prefect:{block}"}})
    result = run_connector_pipeline(connector_id)
    assert result["status"] == "success"
    assert seen[0]["Authorization"] == "Bearer token-from-prefect-5521"
    assert "token-from-prefect-5521" not in json.dumps(get_run(result["run_id"]), default=str)

    missing = make_connector("filesystem", {"path": str(incoming)}, "rest_api",
                             {"url": httpserver.url_for("/upload"), "auth_type": "bearer_token",
                              "token": {"secret": "prefect:no-such-block-here"}})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(missing)
    assert "destination `token` refers to `prefect:no-such-block-here`, but the Prefect API has no Secret block" in (
        caught.value.result["log_summary"])


def test_doctor_names_connectors_holding_plaintext_secrets(make_connector: Callable[..., int], incoming: Path,
                                                           config_store: str) -> None:
    from flows.orchestration.doctor import connector_checks

    plain = make_connector("filesystem", {"path": str(incoming)}, "rest_api",
                           {"url": "http://127.0.0.1:9/upload", "auth_type": "api_key", "api_key": "plain-key-3390"},
                           name=f"plain {uuid.uuid4().hex[:6]}")
    referenced = make_connector("filesystem", {"path": str(incoming)}, "rest_api",
                                {"url": "http://127.0.0.1:9/upload", "auth_type": "api_key",
                                 "api_key": {"secret": "env:HOME"}}, name=f"referenced {uuid.uuid4().hex[:6]}")
    checks = {c.check: c for c in connector_checks(config_store)}
    warned = [c for name, c in checks.items() if name.startswith(f"connector {plain} ") and name.endswith("secrets")]
    assert len(warned) == 1 and warned[0].warn and "destination `api_key`" in warned[0].detail
    assert "plain-key-3390" not in warned[0].detail
    assert not [name for name in checks if name.startswith(f"connector {referenced} ") and name.endswith("secrets")]
