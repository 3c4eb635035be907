"""The `cai` console script, run as a user runs it: a subprocess through its installed entry point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.awkward import AWKWARD_ROWS, awkward_csv

pytestmark = [pytest.mark.cli, pytest.mark.slow]

CAI = shutil.which("cai") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cai")


@pytest.fixture
def cai(config_store: str, prefect_api: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `cai ARGS` against the session's config store and Prefect server."""

    def run(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": database_url or config_store, "PREFECT_API_URL": prefect_api,
               "COLUMNS": "250", "NO_COLOR": "1"}
        return subprocess.run([CAI, *args], env=env, capture_output=True, text=True, timeout=240, check=False)

    return run


def test_init_db_creates_then_reports_current(cai: Callable[..., Any], fresh_db: str) -> None:
    first = cai("init-db", database_url=fresh_db)
    second = cai("init-db", database_url=fresh_db)
    assert first.returncode == 0, first.stderr
    assert "applied 001_config_store, 002_schedules_heartbeats, 003_delivered_files, 004_pipeline_snapshots" \
        in first.stdout
    assert second.returncode == 0 and "schema already current" in second.stdout
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM cai_schema_migrations").fetchone() == (4,)


def test_run_exit_codes_runs_and_connectors_tables(
    cai: Callable[..., Any], make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path,
    schema_name: str,
) -> None:
    awkward_csv(incoming / "visits.csv")
    good = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                          "postgres", {**warehouse, "schema": schema_name}, name="cli good")
    bad = make_connector("filesystem", {"path": str(incoming)}, "postgres", {**warehouse, "port": "abc"},
                         name="cli bad")

    ok = cai("run", str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "success run" in ok.stdout and f"{len(AWKWARD_ROWS)} rows" in ok.stdout
    assert f"inspect: cai pipeline {good} info" in ok.stdout

    failed = cai("run", str(bad))
    assert failed.returncode == 1
    assert "failed run" in failed.stdout and "destination `port` must be an integer" in failed.stdout
    # the flow's log, tracebacks included, went to the Prefect server; the terminal got the reason
    assert "Traceback" not in failed.stdout + failed.stderr and "ERROR" not in failed.stdout + failed.stderr
    assert len((failed.stdout + failed.stderr).strip().splitlines()) <= 3, failed.stdout + failed.stderr
    assert "ERROR" not in ok.stdout + ok.stderr and "Traceback" not in ok.stdout + ok.stderr

    runs = cai("runs", "--connector", str(bad), "--limit", "5")
    assert runs.returncode == 0
    assert "failed" in runs.stdout and "success" not in runs.stdout

    listing = cai("connectors")
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if "cli good source" in row)
    assert "filesystem" in line and "postgres" in line


def test_the_pipeline_of_a_run_on_one_machine_is_inspected_with_dlt_from_another(
    cai: Callable[..., Any], make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path,
    schema_name: str, s3_bucket: dict[str, Any], upload_server: Any, tmp_path: Path,
) -> None:
    """The summary's command works on a machine that never ran the connector (its own empty `CAI_HOME`)."""
    awkward_csv(incoming / "visits.csv")
    loader = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                            "postgres", {**warehouse, "schema": schema_name}, name="loader")
    s3_bucket["fs"].pipe(f"{s3_bucket['bucket']}/in/scan.bin", b"scan")
    copier = make_connector("s3", {"bucket": s3_bucket["bucket"], "path": "in", "transfer": "copy",
                                   **s3_bucket["credentials"]},
                            "rest_api", {"url": upload_server.url, "token": "tok-secret-4411",
                                         "auth_type": "bearer_token"}, name="copier")
    for connector_id in (loader, copier):
        run = cai("run", str(connector_id))
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"inspect: cai pipeline {connector_id} info" in run.stdout
    elsewhere = {**os.environ, "CAI_HOME": str(tmp_path / "machine_c"),
                 "CAI_PIPELINES_DIR": str(tmp_path / "machine_c" / "pipelines"), "COLUMNS": "250"}
    for connector_id, expected in ((loader, schema_name), (copier, "transfers")):
        for command in ("info", "trace", "load-package"):
            shown = subprocess.run([CAI, "pipeline", str(connector_id), command], env=elsewhere, capture_output=True,
                                   text=True, timeout=120, check=False)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert f"connector_{connector_id}_" in shown.stdout
        info = subprocess.run([CAI, "pipeline", str(connector_id), "info"], env=elsewhere, capture_output=True,
                              text=True, timeout=120, check=False)
        assert expected in info.stdout
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        archives = conn.execute("SELECT archive FROM cai_pipeline_snapshots WHERE connector_id IN (%s, %s)",
                                (loader, copier)).fetchall()
    import gzip

    opened = b"".join(gzip.decompress(bytes(a[0])) for a in archives)
    assert b"tok-secret-4411" not in opened and s3_bucket["credentials"]["aws_secret_access_key"].encode() not in opened
    assert "Zoë, Jr." not in opened.decode("utf-8", "replace")  # the staged rows never leave the worker
    missing = subprocess.run([CAI, "pipeline", "999999", "info"], env=elsewhere, capture_output=True, text=True,
                             timeout=120, check=False)
    assert missing.returncode == 1 and "has no saved pipeline yet" in missing.stdout


def test_demo_loads_the_sample_into_the_configured_database(cai: Callable[..., Any], config_store: str) -> None:
    demo = cai("demo", "--patients", "25")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "success run" in demo.stdout
    with psycopg.connect(config_store) as conn:
        patients = conn.execute("SELECT count(*) FROM clinical_demo.patients").fetchone()
    assert patients == (25,)


def test_python_dash_m_flows_cli_lists_every_command() -> None:
    import sys

    from flows.cli import app

    names = {command.name or command.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
             for command in app.registered_commands}
    shown = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    listed = set(re.findall(r"^│ ([a-z][a-z-]+) ", shown, re.M))
    assert names == listed and {"run", "load-csv", "deploy", "trigger", "worker", "doctor"} <= listed


def test_cai_run_without_a_prefect_api_runs_directly_and_keeps_tracebacks_off_the_terminal(
    config_store: str, make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path,
    schema_name: str, tmp_path: Path,
) -> None:
    """The spec's direct execution mode: the same run record, no temporary Prefect server."""
    from flows.store.run_records import list_runs

    (incoming / "labs.csv").write_text("mrn,value\n00123,2.5\n")
    (incoming / "bad.csv").write_text("mrn,value\n1,2,3\n")  # one extra field
    good = make_connector("filesystem", {"path": str(incoming), "file_pattern": "labs.csv"},
                          "postgres", {**warehouse, "schema": schema_name}, name="direct good")
    bad = make_connector("filesystem", {"path": str(incoming), "file_pattern": "bad.csv"},
                         "postgres", {**warehouse, "schema": schema_name}, name="direct bad")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(DATABASE_URL=config_store, CAI_HOME=str(tmp_path / "home"), COLUMNS="250", NO_COLOR="1",
               PREFECT_HOME=str(tmp_path / "prefect"))  # no profile pointing at a server either
    ok = subprocess.run([CAI, "run", str(good)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "success run" in ok.stdout and "1 rows" in ok.stdout
    assert "temporary server" not in ok.stdout + ok.stderr and "Traceback" not in ok.stdout + ok.stderr
    record = list_runs(good, 1)[0]
    assert record["status"] == "success" and record["prefect_flow_run_id"] is None
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f'SELECT mrn FROM "{schema_name}".labs').fetchall() == [("00123",)]

    failed = subprocess.run([CAI, "run", str(bad)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == 1
    assert "failed run" in failed.stdout and "bad.csv" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    assert len((failed.stdout + failed.stderr).strip().splitlines()) <= 3
    log = (tmp_path / "home" / "logs" / "runs.log").read_text()
    assert "Traceback" in log and "bad.csv" in log  # the details went to the run log
    runs = subprocess.run([CAI, "runs", "--connector", str(bad)], env={**env, "COLUMNS": "80"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert runs.returncode == 0 and "│ failed │" in runs.stdout
    assert max(len(line) for line in runs.stdout.splitlines()) <= 80, runs.stdout


def _run_and_report_module(connector: int, module: str, env: dict[str, str]) -> str:
    """`cai run CONNECTOR` in a process of its own that says, once the run has ended, whether ``module``
    was imported; the run must succeed. Returns its output."""
    probe = ("import atexit, sys\n"
             f"atexit.register(lambda: print('{module} loaded:', '{module}' in sys.modules))\n"
             f"sys.argv = ['cai', 'run', '{connector}']\n"
             "from flows.cli import main\n"
             "main()\n")
    done = subprocess.run([str(Path(CAI).with_name("python")), "-c", probe], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0 and "success run" in done.stdout, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_csv_connector_run_loads_one_postgres_driver(
    config_store: str, make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path,
    schema_name: str, tmp_path: Path,
) -> None:
    """The config store (lock, record, config, heartbeat) goes through psycopg2, which dlt's PostgreSQL
    destination loads anyway: psycopg 3 beside it added 9-10 MB to a CSV connector's peak, whose goal is
    150 MB (bench/load_csv.py). Checked in the run's own process, after a real run, once it has ended."""
    awkward_csv(incoming / "visits.csv")
    connector = make_connector("filesystem", {"path": str(incoming), "file_pattern": "visits.csv"},
                               "postgres", {**warehouse, "schema": schema_name}, name="one driver")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(DATABASE_URL=config_store, CAI_HOME=str(tmp_path / "home"), COLUMNS="250",
               PREFECT_HOME=str(tmp_path / "prefect"))
    output = _run_and_report_module(connector, "psycopg", env)
    assert "psycopg loaded: False" in output, output
    with psycopg.connect(config_store) as conn:
        count = conn.execute(f'SELECT count(*) FROM "{schema_name}".visits').fetchone()
        record = conn.execute("SELECT status, rows_ingested, metrics->>'row_counts' FROM cai_connector_runs "
                              "WHERE connector_id = %s", (connector,)).fetchone()
    assert count == (len(AWKWARD_ROWS),)
    assert record is not None and record[:2] == ("success", len(AWKWARD_ROWS)) and "visits" in record[2]


def test_a_run_through_the_prefect_server_stores_its_parameters_without_loading_fastapi(
    config_store: str, prefect_api: str, make_connector: Callable[..., int], warehouse: dict[str, Any],
    incoming: Path, schema_name: str, tmp_path: Path,
) -> None:
    """Prefect serializes a flow's parameters with FastAPI's encoder, importing FastAPI and Starlette
    (0.1-0.2 s) in every `cai run` through a server; ours are JSON already. Checked in the run's own
    process, and against what the server stored for the flow run."""
    from prefect.client.orchestration import get_client

    awkward_csv(incoming / "visits.csv")
    connector = make_connector("filesystem", {"path": str(incoming), "file_pattern": "visits.csv"},
                               "postgres", {**warehouse, "schema": schema_name}, name="no fastapi")
    env = {**os.environ, "DATABASE_URL": config_store, "PREFECT_API_URL": prefect_api, "COLUMNS": "250",
           "CAI_HOME": str(tmp_path / "home")}
    output = _run_and_report_module(connector, "fastapi", env)
    assert "fastapi loaded: False" in output, output
    with psycopg.connect(config_store) as conn:
        row = conn.execute("SELECT prefect_flow_run_id FROM cai_connector_runs WHERE connector_id = %s",
                           (connector,)).fetchone()
    assert row is not None and row[0]
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(row[0])
    assert stored.parameters == {"connector_id": connector, "prefect_flow_run_id": None}
    assert stored.state is not None and stored.state.is_completed()


@pytest.mark.parametrize("where", ["nowhere", "profile", "prefect.toml"])
def test_the_prefect_api_is_found_where_prefect_itself_would_find_it(tmp_path: Path, where: str) -> None:
    """A direct run happens only where no Prefect API is configured by any of Prefect's sources."""
    import sys

    home, folder = tmp_path / "prefect-home", tmp_path / "cwd"
    home.mkdir()
    folder.mkdir()
    if where == "profile":
        (home / "profiles.toml").write_text('active = "prod"\n[profiles.prod]\n'
                                            'PREFECT_API_URL = "http://prefect.example:4200/api"\n')
    if where == "prefect.toml":
        (folder / "prefect.toml").write_text('[api]\nurl = "http://prefect.example:4200/api"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    found = subprocess.run([sys.executable, "-c", "from flows.cli import _prefect_api; print(_prefect_api())"],
                           cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert found == ("None" if where == "nowhere" else "http://prefect.example:4200/api")


def test_prefect_sdk_analytics_are_off_wherever_cai_starts_prefect(tmp_path: Path) -> None:
    """Prefect starts its SDK analytics when imported (a device id; events from interactive terminals)
    unless DO_NOT_TRACK is set or the environment looks like CI. Checked in an environment that is
    neither, so the first check shows they would run."""
    from prefect._internal.analytics.ci_detection import CI_ENV_VARS

    env = {k: v for k, v in os.environ.items() if k not in CI_ENV_VARS and k != "DO_NOT_TRACK"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    check = "from prefect._internal.analytics.enabled import is_telemetry_enabled; print(is_telemetry_enabled())"
    alone = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    through_cai = subprocess.run([sys.executable, "-c", f"import flows.cli; {check}"], env=env,
                                 capture_output=True, text=True, timeout=120)
    assert (alone.stdout.strip(), through_cai.stdout.strip()) == ("True", "False"), alone.stderr + through_cai.stderr


@pytest.mark.parametrize("entry", [
    "sys.argv = ['cai', 'runs', '--help']; from flows.cli import main; main()",  # every `cai` command
    "import flows.dlt_pipeline_flow",  # a flow run's own process (cold runs, `cai run`)
])
def test_processes_end_without_the_interpreters_last_collection(entry: str) -> None:
    """With dlt imported the interpreter's collections on the way out take 0.4-0.6 s after the work.
    Every `cai` command and flow-run process freezes its objects once everything else at exit has run:
    a handler registered before the entry runs after the entry's, and sees the objects frozen."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count()))\n"
             f"{entry}\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    frozen = re.search(r"frozen at exit: (\d+)", done.stdout)
    assert frozen and int(frozen.group(1)) > 10_000, done.stdout[-500:] + done.stderr[-2000:]
