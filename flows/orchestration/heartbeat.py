"""Run heartbeats and the sweep that closes runs whose worker died.

A flow run that is killed outright (kill -9, the OOM killer, a machine lost) never reaches its
`finally`, so its record would say `started` for ever. While a run works, a daemon thread sets
`heartbeat_at` (UTC) every `CAI_HEARTBEAT_SECONDS` (30). `sweep_stale_runs` closes every
`started` run whose heartbeat is older than `CAI_HEARTBEAT_STALE_SECONDS` (120) as `failed`, with
"worker stopped responding". `close_orphaned_runs` needs no wait: a run that holds its connector's run
lock knows every other `started` run of that connector is dead, however fresh its heartbeat looks.

`record_unrecorded_flow_runs` covers what never got a record at all: a flow run of the deployment
that Prefect ended CRASHED, FAILED or CANCELLED before its flow body created one (a process that
died at submission, a run cancelled while it waited) gets a `failed` record naming its connector,
its flow-run id and Prefect's state message, so the run table accounts for every run Prefect knows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from cai_common.settings import settings
from flows.store.config_store import UTC_NOW, connect


def heartbeat_seconds() -> float:
    """How often a running flow touches its run record."""
    return settings().heartbeat_seconds


def stale_seconds() -> float:
    """How old a heartbeat may get before its run counts as dead (at least 3 heartbeats)."""
    return max(settings().heartbeat_stale_seconds, 3 * heartbeat_seconds())


def beat(run_id: int, url: str | None = None) -> None:
    """Touch one run's heartbeat."""
    with connect(url) as conn:
        conn.execute(f"UPDATE cai_connector_runs SET heartbeat_at = {UTC_NOW} WHERE id = %s", (run_id,))


@contextlib.contextmanager
def heartbeat(run_id: int | None, url: str | None = None) -> Iterator[None]:
    """Keep a run's heartbeat fresh while the block runs (a daemon thread; a failed beat is retried next time)."""
    if run_id is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(heartbeat_seconds()):
            with contextlib.suppress(Exception):  # the config DB blinking must not kill the run
                beat(run_id, url)

    thread = threading.Thread(target=loop, name=f"heartbeat-run-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def sweep_stale_runs(url: str | None = None, older_than: float | None = None) -> list[dict[str, Any]]:
    """Close `started` runs with a stale heartbeat as `failed`; returns the runs closed."""
    seconds = stale_seconds() if older_than is None else older_than
    with connect(url) as conn:
        return conn.execute(
            f"UPDATE cai_connector_runs SET status = 'failed', finished_at = {UTC_NOW}, "
            "log_summary = concat_ws('; ', log_summary, 'worker stopped responding: no heartbeat since ' "
            "  || to_char(COALESCE(heartbeat_at, started_at), 'YYYY-MM-DD HH24:MI:SS')) "
            f"WHERE status = 'started' AND COALESCE(heartbeat_at, started_at) < {UTC_NOW} - make_interval(secs => %s) "
            "RETURNING id, connector_id, prefect_flow_run_id, log_summary",
            (seconds,),
        ).fetchall()


STOPPED_BY_WORKER = ("stopped: its worker was shut down (SIGTERM) and the run had not finished within "
                     "CAI_WORKER_STOP_SECONDS; nothing was renamed into place after that and no source of an "
                     "unfinished copy was deleted: the next run takes up the rest")


def close_stopped_runs(flow_run_ids: list[str], url: str | None = None) -> list[dict[str, Any]]:
    """Close as `failed` the still-`started` records of these flow runs, whose processes a stopping
    worker ended (`flows.orchestration.stopping`); returns the records closed."""
    if not flow_run_ids:
        return []
    with connect(url) as conn:
        return conn.execute(
            f"UPDATE cai_connector_runs SET status = 'failed', finished_at = {UTC_NOW}, "
            "log_summary = concat_ws('; ', log_summary, %s) "
            "WHERE status = 'started' AND prefect_flow_run_id = ANY(%s) "
            "RETURNING id, connector_id, prefect_flow_run_id, log_summary",
            (STOPPED_BY_WORKER, flow_run_ids),
        ).fetchall()


def end_flow_runs_of(closed: list[dict[str, Any]], current: str | None = None,
                     message: str = "its worker stopped; cai closed run record {id} as failed") -> list[str]:
    """End in Prefect the flow runs of records closed because their worker died: a killed worker leaves
    its flow run RUNNING for good otherwise. Each that is not final yet becomes CRASHED (forced: the
    dead process cannot report it); ``current``, this run's own flow run, is never touched. Returns the
    flow-run ids ended. Needs the Prefect API."""
    from prefect import get_client
    from prefect.states import Crashed

    ended: list[str] = []
    ids = {str(run["prefect_flow_run_id"]): run for run in closed
           if run.get("prefect_flow_run_id") and str(run["prefect_flow_run_id"]) != str(current)}
    if not ids:
        return ended
    with get_client(sync_client=True) as client:
        for flow_run_id, run in ids.items():
            try:
                flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            except Exception:  # not a flow run of this server (a direct run, another server): nothing to end
                continue
            if flow_run.state is not None and flow_run.state.is_final():
                continue
            client.set_flow_run_state(flow_run_id, Crashed(message=message.format(id=run["id"])), force=True)
            ended.append(flow_run_id)
    return ended


def close_orphaned_runs(connector_id: int, url: str | None = None) -> list[dict[str, Any]]:
    """Close the connector's `started` runs as `failed`; returns the runs closed.

    Only for a caller that holds the connector's run lock (`concurrency.one_run_per_connector`): a run
    takes it before creating its record and closes the record before letting it go, so while the lock
    is held no other run of the connector is alive. A worker killed seconds ago still has a fresh
    heartbeat, which `sweep_stale_runs` rightly leaves alone; the next run of its connector closes it.
    """
    with connect(url) as conn:
        return conn.execute(
            f"UPDATE cai_connector_runs SET status = 'failed', finished_at = {UTC_NOW}, "
            "log_summary = concat_ws('; ', log_summary, 'worker stopped responding: the connector''s next run "
            "found this one unfinished and its run lock free') "
            "WHERE connector_id = %s AND status = 'started' RETURNING id, connector_id, prefect_flow_run_id",
            (connector_id,),
        ).fetchall()


FINAL_FAILURES = ("CRASHED", "FAILED", "CANCELLED")
SWEEP_LOCK = (1667328371, 0)
"""Advisory lock keys taken while recording: two sweeps never record one flow run twice."""


def record_unrecorded_flow_runs(url: str | None = None, days: float = 7, limit: int = 200) -> list[dict[str, Any]]:
    """Give a `failed` record to each flow run of the deployment that ended badly without one.

    Looks at the deployment's flow runs expected to start in the last ``days`` that are CRASHED,
    FAILED or CANCELLED, and inserts a record for each whose id no run record carries. Returns the
    records inserted. Needs the Prefect API (the caller skips it without one).
    """
    import datetime

    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.orchestration.deployment import DEPLOYMENT

    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in FINAL_FAILURES])),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),  # type: ignore[arg-type]
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[DEPLOYMENT])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
    candidates = [run for run in runs if _connector_of(run) is not None]
    if not candidates:
        return []
    inserted: list[dict[str, Any]] = []
    with connect(url) as conn:  # one transaction: committed (and the lock released) when the block ends
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SWEEP_LOCK)
        recorded = {row["prefect_flow_run_id"] for row in conn.execute(
            "SELECT prefect_flow_run_id FROM cai_connector_runs WHERE prefect_flow_run_id = ANY(%s)",
            ([str(run.id) for run in candidates],)).fetchall()}
        for run in candidates:
            if str(run.id) in recorded:
                continue
            state = run.state
            message = (state.message if state else None) or "no message"
            kind = state.type.value if state else "ENDED"
            summary = (f"connector {_connector_of(run)}: Prefect flow run {run.name} ({run.id}) ended {kind} before "
                       f"the run began, so nothing ran: {message}")[:4000]
            began = run.start_time or run.expected_start_time or run.created
            ended = run.end_time or (state.timestamp if state else None) or began
            row = conn.execute(
                "INSERT INTO cai_connector_runs (connector_id, status, prefect_flow_run_id, started_at, finished_at, "
                "rows_ingested, log_summary) VALUES (%s, 'failed', %s, %s, %s, 0, %s) "
                "RETURNING id, connector_id, prefect_flow_run_id, log_summary",
                (_connector_of(run), str(run.id), _utc_naive(began), _utc_naive(ended), summary)).fetchone()
            inserted.append(dict(row or {}))
    return inserted


def _connector_of(run: Any) -> int | None:
    value = (run.parameters or {}).get("connector_id")
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _utc_naive(moment: Any) -> Any:
    """The spec's `timestamp without time zone` columns hold UTC."""
    import datetime

    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)
