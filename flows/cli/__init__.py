"""The `cai` command line: set up the config store, run connectors, inspect runs, run the demo."""

from __future__ import annotations

import os

# Prefect's first temporary server takes 12-27 s to start on a 2-core box (STACK.md); its default
# 20 s timeout would fail the very first `cai run`.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# A clinical worker makes no outbound calls it was not configured to make (dlt's telemetry is off too):
# not the Prefect server's analytics, and not the SDK's, which Prefect starts on import (a device id,
# then events from interactive terminals) unless DO_NOT_TRACK is set. Workers, warm processes and
# flow runs started from here inherit both.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import json  # noqa: E402
import time  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cai_common.secrets import mask_secrets  # noqa: E402  (light: `cai --help` imports no dlt)

app = typer.Typer(help="Run Clinical AI data connectors (dlt pipelines orchestrated by Prefect).", no_args_is_help=True)
console = Console()


def main() -> None:
    """The `cai` entry point: a command that fails unexpectedly prints one line, never a traceback
    (run with CAI_DEBUG=1 to see it)."""
    from cai_common import exit_without_final_collection

    exit_without_final_collection()
    try:
        app()
    except Exception as exc:
        if os.environ.get("CAI_DEBUG"):
            raise
        console.print(f"[red]failed[/red]: {mask_secrets(explain(exc)).strip().splitlines()[0]}", soft_wrap=True)
        raise SystemExit(1) from None


def explain(exc: BaseException) -> str:
    """The telling line of an error (`cai_common.errors.explain`, imported only when something failed)."""
    from cai_common.errors import explain as telling

    return telling(exc)


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


def _shorten(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _run(connector_id: int) -> dict[str, Any]:
    """Run one connector in this process and return its result dict, failed or not.

    With a Prefect API configured (`PREFECT_API_URL`), through the flow (tasks, logs and artifact
    on that server); without one, directly: the same steps, no temporary server. Either way the
    terminal gets the summary; tracebacks go to the Prefect log or, directly, to `runs.log`.
    """
    from cai_common import ConnectorRunFailed

    # The run's log (tracebacks included) goes to the Prefect server, not this terminal, which gets
    # the summary. Only this process: `cai worker` keeps its console.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    try:
        if _prefect_api():
            from flows.dlt_pipeline_flow import run_connector_pipeline

            return run_connector_pipeline(connector_id)
        from flows.orchestration.run import run_directly

        _log_to_file()
        with _progress_bar():
            return run_directly(connector_id)
    except ConnectorRunFailed as exc:
        return exc.result


def _prefect_api() -> str | None:
    """The configured Prefect API, if any: `PREFECT_API_URL`, else the active Prefect profile's.

    Read without importing Prefect (1.5 s) in the usual case, so a direct run never loads it. Where
    Prefect's other settings sources exist in the current folder (`prefect.toml`, `pyproject.toml`,
    `.env`), Prefect's own resolution decides.
    """
    import tomllib
    from pathlib import Path

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if any(Path(name).is_file() for name in ("prefect.toml", ".env")) or (
            Path("pyproject.toml").is_file() and "[tool.prefect" in Path("pyproject.toml").read_text()):
        from prefect.settings import PREFECT_API_URL

        configured = PREFECT_API_URL.value()
        return str(configured) if configured else None
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = (profiles.get("profiles") or {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def _progress_bar() -> Any:
    """On a terminal, a bar of bytes moved and their rate while the run works; elsewhere nothing."""
    import contextlib

    if not console.is_terminal:
        return contextlib.nullcontext()
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TimeElapsedColumn, TransferSpeedColumn

    from cai_common.progress import watching

    stack = contextlib.ExitStack()
    bar = stack.enter_context(Progress(SpinnerColumn(), "{task.description}", DownloadColumn(), TransferSpeedColumn(),
                                       TimeElapsedColumn(), console=console, transient=True))
    task = bar.add_task("running", total=None)
    stack.enter_context(watching(lambda nbytes: bar.advance(task, nbytes)))
    return stack


def _log_to_file() -> None:
    """Direct runs and `load-csv` log (tracebacks included) to `<cai data dir>/logs/runs.log` (rotated at
    10 MB, 5 kept), not to the terminal; dlt's own log (a failed load job's traceback) goes there too."""
    import logging

    from flows.store.embedded import data_dir

    folder = data_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("cai.run")
    if not logger.handlers:
        from logging.handlers import RotatingFileHandler

        handler = RotatingFileHandler(folder / "runs.log", maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # dlt writes to the first handler its logger has (a new stderr one when it has none), whenever it
    # sets its logging up again: give it the file's, in place of any stderr one.
    dlt_logger = logging.getLogger("dlt")
    dlt_logger.handlers[:] = logger.handlers[:1]
    dlt_logger.propagate = False


def _print_result(result: dict[str, Any], seconds: float) -> None:
    colour = "green" if result["status"] == "success" else "red"
    console.print(f"[{colour}]{result['status']}[/{colour}] run {result.get('run_id')} of connector "
                  f"{result.get('connector_id')}: {result.get('rows_ingested')} rows in {seconds:.1f} s")
    console.print(result.get("log_summary") or "")
    inspect = (result.get("metrics") or {}).get("inspect")
    if inspect and inspect not in (result.get("log_summary") or ""):
        console.print(f"inspect: {inspect}")


@app.command("init-db")
def init_db() -> None:
    """Create or upgrade the config-store schema (idempotent)."""
    from flows.store.config_store import database_url
    from flows.store.config_store import init_db as apply

    applied = apply()
    where = mask_secrets(database_url())
    console.print(f"applied {', '.join(applied)} on {where}" if applied else f"schema already current on {where}")


@app.command()
def run(connector_id: Annotated[int, typer.Argument(help="id in cai_connectors")]) -> None:
    """Run one connector now (through Prefect when PREFECT_API_URL is set, else directly); exit 0 on success."""
    started = time.monotonic()
    result = _run(connector_id)
    _print_result(result, time.monotonic() - started)
    raise typer.Exit(0 if result["status"] == "success" else 1)


@app.command()
def runs(
    connector: Annotated[int | None, typer.Option(help="only this connector's runs")] = None,
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
    full: Annotated[bool, typer.Option(help="whole summaries and both timestamps")] = False,
) -> None:
    """Recent runs, newest first (readable in 80 columns; --full for everything)."""
    from flows.store.run_records import list_runs

    rows = list_runs(connector, limit)
    if full:
        columns = ["id", "connector_id", "status", "started_at", "finished_at", "rows_ingested", "log_summary"]
        console.print(_table("connector runs", rows, columns))
        return
    brief = [{"run": r["id"], "conn": r["connector_id"], "status": r["status"],
              "started (UTC)": f"{r['started_at']:%m-%d %H:%M}" if r.get("started_at") else "",
              "took": _took(r), "rows": r["rows_ingested"],
              "summary": _shorten((r.get("log_summary") or "").split(": ", 1)[-1], 60)} for r in rows]
    console.print(_table("connector runs", brief, ["run", "conn", "status", "started (UTC)", "took", "rows",
                                                   "summary"]))


def _took(run: dict[str, Any]) -> str:
    """A run's duration (`running` while it is open)."""
    if not run.get("finished_at") or not run.get("started_at"):
        return "running" if run.get("status") == "started" else ""
    seconds = (run["finished_at"] - run["started_at"]).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@app.command()
def connectors() -> None:
    """Connectors with their source and destination types."""
    from flows.store.catalog import list_connectors

    columns = ["id", "name", "source_name", "source_type", "destination_name", "destination_type"]
    console.print(_table("connectors", list_connectors(), columns))


@app.command("load-csv")
def load_csv(
    location: Annotated[str, typer.Argument(help="a CSV file, a folder, a glob, or s3://bucket/prefix/*.csv")],
    to: Annotated[str | None, typer.Option(help="target database URL; default: the config store's")] = None,
    schema: Annotated[str, typer.Option(help="target schema")] = "public",
    table: Annotated[str | None, typer.Option(help="one table for every file; default: a table per file")] = None,
    replace: Annotated[bool, typer.Option(help="reload every file, replacing the tables")] = False,
    column: Annotated[list[str] | None, typer.Option(
        help="pin a column's PostgreSQL type instead of inferring it, e.g. mrn:text or dose:numeric(10,3); repeatable",
    )] = None,
    settle_seconds: Annotated[float | None, typer.Option(
        help="take a file only once it stayed unchanged this long (0: at once); default: CAI_SETTLE_SECONDS (5) "
             "on folders, 0 on S3 and with --ready-marker",
    )] = None,
    ready_marker: Annotated[str | None, typer.Option(
        help="take a file only once this marker is beside it: {name}.done (per file) or _SUCCESS (per folder)",
    )] = None,
) -> None:
    """Load CSV files into PostgreSQL (no connector needed); re-runs load only new or changed files."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from cai_common.progress import watching
    from dlt_sources.filesystem import BadFilesError
    from flows.paths import load_csv as loader
    from flows.store.config_store import database_url

    dsn = to or database_url()
    started = time.monotonic()
    _log_to_file()
    try:
        pinned = loader.pinned_columns(column or [])
        source = loader.source_for(location, replace, pinned, settle_seconds=settle_seconds, ready_marker=ready_marker)
        files, size, copied_size = loader.matched_bytes(source)
        columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            # Two steps: the files are read (downloaded, transcoded, or linked where they lie), then
            # COPY loads them; each bar moves with its own bytes.
            read = bar.add_task(f"read {files} file(s)", total=size or None)
            copied = bar.add_task("COPY into PostgreSQL", total=copied_size)
            with watching(lambda n: bar.advance(copied, n)):
                outcome = loader.load_csv(source, dsn, schema, table, progress=lambda n: bar.advance(read, n))
    except BadFilesError as exc:
        console.print(_table("files", [f.as_dict() for f in exc.failures], ["file_url", "table", "status", "error"]))
        console.print(f"[red]failed[/red]: {mask_secrets(str(exc), [dsn])}")
        raise typer.Exit(1) from None
    except Exception as exc:  # a person reads this: one clear line, secrets masked
        console.print(f"[red]failed[/red]: {mask_secrets(explain(exc), [dsn])}")
        raise typer.Exit(1) from None
    report = outcome.metrics.get("files") or []
    console.print(_table("files", report, ["file_url", "table", "rows", "status", "error"]))
    console.print(f"{outcome.summary} in {time.monotonic() - started:.1f} s")
    raise typer.Exit(1 if any(f["status"] == "failed" for f in report) else 0)


@app.command("pipeline", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline(
    ctx: typer.Context,
    connector_id: Annotated[int, typer.Argument(help="id in cai_connectors")],
) -> None:
    """Inspect a connector's dlt pipeline from any machine: `cai pipeline 7 info` (or trace, schema, load-package)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from flows.store.pipeline_snapshots import restore_snapshot

    args = ctx.args or ["info"]
    with tempfile.TemporaryDirectory(prefix="cai-pipeline-") as scratch:
        try:
            found = restore_snapshot(connector_id, Path(scratch))
        except Exception as exc:
            console.print(f"[red]failed[/red]: {mask_secrets(explain(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None
        console.print(f"connector {connector_id}: pipeline {found['pipeline_name']} as its last run left it "
                      f"({found['saved_at']:%Y-%m-%d %H:%M:%S} UTC)", soft_wrap=True)
        dlt = Path(sys.executable).with_name("dlt")
        done = subprocess.run([str(dlt), "pipeline", "--pipelines-dir", scratch, found["pipeline_name"], *args],
                              check=False)
    raise typer.Exit(done.returncode)


@app.command("stop-db")
def stop_db() -> None:
    """Stop the embedded PostgreSQL server (it keeps running between commands to start instantly)."""
    from flows.store.embedded import data_dir, stop_embedded_server

    stopped = stop_embedded_server()
    pgdata = data_dir() / "pgdata"
    console.print(f"stopped the embedded server in {pgdata}" if stopped else "no embedded server running")


@app.command()
def demo(
    patients: Annotated[int, typer.Option(help="patients in the sample (encounters and labs follow)")] = 200,
) -> None:
    """Set up the schema, write sample clinical CSVs, register a folder -> Postgres connector and run it."""
    from flows.cli import sample as demo_mod
    from flows.store.config_store import database_url
    from flows.store.config_store import init_db as apply
    from flows.store.embedded import data_dir
    from flows.store.run_records import get_run

    started = time.monotonic()
    console.print(f"config store: {mask_secrets(database_url())}")
    apply()
    folder = data_dir() / "demo" / "incoming"
    written = demo_mod.write_sample_csvs(folder, patients=patients)
    console.print(f"wrote {sum(written.values())} rows of sample CSVs to {folder}")
    connector_id = demo_mod.ensure_demo_connector(folder)
    result = _run(connector_id)
    _print_result(result, time.monotonic() - started)
    record = get_run(result["run_id"]) if result.get("run_id") else None
    if record:
        fields = [{"column": k, "value": _shorten(v)} for k, v in record.items()]
        console.print(_table("run record (cai_connector_runs)", fields, ["column", "value"]))
    counts = demo_mod.table_counts(demo_mod.DEMO_SCHEMA, list(written))
    console.print(_table(f"rows in {demo_mod.DEMO_SCHEMA}",
                         [{"table": t, "csv rows": written[t], "rows in table": counts[t]} for t in written],
                         ["table", "csv rows", "rows in table"]))
    raise typer.Exit(0 if result["status"] == "success" and counts == written else 1)


@app.command()
def deploy() -> None:
    """Create or update the Prefect deployment (pool `default`) and one schedule per connector cron."""
    from flows.orchestration.deployment import DEPLOYMENT, FLOW_NAME, WORK_POOL
    from flows.orchestration.deployment import deploy as apply

    done = apply()
    if done.created_pool:
        console.print(f"created work pool `{WORK_POOL}` (process)")
    console.print(f"deployment {done.deployment_id}: {FLOW_NAME}/{DEPLOYMENT} on pool `{WORK_POOL}`", soft_wrap=True)
    rows = [{"connector_id": cid, "cron (UTC)": cron} for cid, cron in done.schedules.items()]
    console.print(_table("schedules", rows, ["connector_id", "cron (UTC)"]) if rows else "no schedules")


@app.command()
def schedule(
    connector_id: Annotated[int, typer.Argument(help="id in cai_connectors")],
    cron: Annotated[str | None, typer.Argument(help="cron expression in UTC, e.g. '0 2 * * *'")] = None,
    clear: Annotated[bool, typer.Option(help="remove the connector's schedule")] = False,
) -> None:
    """Set or clear a connector's cron (the `schedule` column); `cai deploy` applies it to Prefect."""
    from flows.store.catalog import set_schedule

    if (cron is None) == (not clear):
        console.print("[red]give a cron expression or --clear[/red]")
        raise typer.Exit(2)
    try:
        set_schedule(connector_id, None if clear else cron)
    except (LookupError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"connector {connector_id}: " + ("schedule cleared" if clear else f"cron `{cron}` (UTC)")
                  + "; run `cai deploy` to apply it")


@app.command()
def trigger(
    connector_id: Annotated[int, typer.Argument(help="id in cai_connectors")],
    wait: Annotated[bool, typer.Option(help="wait for the run to end and print its outcome")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 3600,
    key: Annotated[str | None, typer.Option(
        "--key", help="idempotency key: a repeated trigger with the same key returns the run it created")] = None,
) -> None:
    """Start a run on the workers, as the backend does (a flow run of the deployment)."""
    from flows.orchestration import trigger as api
    from flows.store.run_records import find_run_by_flow_run

    try:
        flow_run_id = api.trigger(connector_id, key)
        console.print(f"flow run {flow_run_id} created for connector {connector_id}")
        if not wait:
            return
        state = (api.wait(flow_run_id, timeout).get("state") or {})
    except Exception as exc:  # no deployment, the API away, a timeout: one line for a person
        console.print(f"[red]failed[/red]: {mask_secrets(explain(exc))}")
        raise typer.Exit(1) from None
    record = find_run_by_flow_run(flow_run_id)
    if record is None:
        console.print(f"[red]{state.get('type')}[/red]: no run record ({state.get('message') or ''})")
        raise typer.Exit(1)
    colour = "green" if record["status"] == "success" else "red"
    console.print(f"[{colour}]{record['status']}[/{colour}] run {record['id']}: {record['rows_ingested']} rows; "
                  f"Prefect state {state.get('type')}")
    console.print(record.get("log_summary") or "")
    raise typer.Exit(0 if record["status"] == "success" else 1)


WARM_START_SECONDS = 60.0
"""Longest `cai worker` waits for its warm process to listen before it polls for runs."""


@app.command()
def worker(
    limit: Annotated[int | None, typer.Option(
        help="most flow runs this worker runs at once (default: 3 per core it may use, cgroup limits counted)",
    )] = None,
    name: Annotated[str | None, typer.Option(help="worker name (default: Prefect's)")] = None,
    poll: Annotated[float | None, typer.Option(
        help="seconds between polls for new runs (PREFECT_WORKER_QUERY_SECONDS; default 1, Prefect's own is 10)",
    )] = None,
    healthcheck: Annotated[bool, typer.Option(
        help="serve GET /health on PREFECT_WORKER_WEBSERVER_PORT (default 8080): the image's HEALTHCHECK and "
             "Kubernetes' liveness probe ask it")] = False,
    warm: Annotated[bool, typer.Option(
        help="start flow runs from a warm process that has imported Prefect and dlt (about 3 CPU-seconds "
             "less per run); --no-warm starts each run cold")] = True,
) -> None:
    """Start a process worker on pool `default` (wraps `prefect worker start`); Ctrl-C stops it."""
    import sys

    from flows.orchestration.deployment import WORK_POOL
    from flows.store.config_store import ensure_current_schema, require_shared_store

    try:  # a worker records runs the platform reads: in the shared store, on this version's schema
        ensure_current_schema(require_shared_store("`cai worker`"))
    except Exception as exc:
        console.print(f"[red]cai worker[/red]: {mask_secrets(explain(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    from flows.orchestration.warm import DEFAULT_RUNS_PER_CORE, usable_cores

    # A run waits for the next poll: Prefect's 10 s left slots idle (measured +43 % runs/min at 2 s), and an
    # idle worker's run started 0.85 s after its trigger at 1 s (1.5 s at 2 s). A poll is one small query.
    if poll is not None:
        os.environ["PREFECT_WORKER_QUERY_SECONDS"] = str(poll)
    else:
        os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
               "--limit", str(limit if limit is not None else DEFAULT_RUNS_PER_CORE * usable_cores())]
    if name:
        command += ["--name", name]
    if healthcheck:
        command += ["--with-healthcheck"]
    # The deployment's flow-run command is `python -m flows.orchestration.warm`: this interpreter's.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    warm_process = None
    if warm:
        # Flow runs fork from a process that has imported Prefect, dlt and the flow already
        # (flows/orchestration/warm.py); it stops when this worker does.
        import subprocess
        import tempfile

        from flows.orchestration.warm import SOCKET_ENV

        socket_path = os.path.join(tempfile.mkdtemp(prefix="cai-warm-"), "warm.sock")
        warm_process = subprocess.Popen([sys.executable, "-m", "flows.orchestration.warm", "--serve", socket_path])
        os.environ[SOCKET_ENV] = socket_path
        # Poll for runs only once it listens (its imports take a few seconds): a run taken before
        # would start cold, about 5 CPU-seconds more. Should it not come up, runs start cold.
        deadline = time.monotonic() + WARM_START_SECONDS
        while not os.path.exists(socket_path) and warm_process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    from cai_common.settings import settings
    from flows.orchestration.stopping import supervise

    # Not exec'd: `cai worker` stays between the Prefect worker and the pod's SIGTERM (stopping.py).
    raise typer.Exit(supervise(command, settings().worker_stop_seconds, helpers=[warm_process] if warm_process else []))


@app.command()
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 4200,
    database_url: Annotated[str | None, typer.Option(
        help="PostgreSQL for Prefect's own tables (libpq URL); default: database `prefect` on the config "
             "store's server, created if missing")] = None,
) -> None:
    """Start a Prefect server on PostgreSQL (not SQLite), as production runs it; Ctrl-C stops it."""
    import sys

    from flows.orchestration.prefect_server import PREFECT_DATABASE, server_environment
    from flows.store.config_store import require_shared_store

    if database_url:
        environment = server_environment(database_url, _database_name(database_url) or PREFECT_DATABASE)
    else:
        try:  # never a server on an embedded database inside one container
            store = require_shared_store("`cai server` without `--database-url`")
        except Exception as exc:
            console.print(f"[red]cai server[/red]: {explain(exc)}", soft_wrap=True)
            raise typer.Exit(2) from None
        environment = server_environment(store, PREFECT_DATABASE)
    os.environ.update(environment)
    console.print(f"Prefect server on {mask_secrets(environment['PREFECT_API_DATABASE_CONNECTION_URL'])}; "
                  f"API at http://{host}:{port}/api")
    os.execv(sys.executable, [sys.executable, "-m", "prefect", "server", "start", "--host", host,
                              "--port", str(port)])


def _database_name(url: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(url).get("dbname")
    return str(name) if name else None


@app.command()
def doctor() -> None:
    """Check the config DB, the Prefect API and every connector's source and destination."""
    from flows.orchestration.doctor import run_checks

    checks = run_checks()
    console.print(_table("cai doctor", [c.as_row() for c in checks], ["check", "target", "status", "detail"]))
    failed = [c for c in checks if not c.ok]
    warned = [c for c in checks if c.ok and c.warn]
    console.print(f"[red]{len(failed)} check(s) failed[/red]" if failed else "[green]all checks passed[/green]")
    if warned:
        console.print(f"[yellow]{len(warned)} warning(s)[/yellow]")
    raise typer.Exit(1 if failed else 0)
