"""The Prefect flow `run_connector_pipeline`: the run sequence (`flows.orchestration.run`) with Prefect tasks.

Each step is a task (database steps retried on connection errors, never on config or data errors),
the run's load metrics become a Prefect table artifact, and a failed run fails the flow run after
its record is closed. Without a Prefect API, `flows.orchestration.run.run_directly` runs the same steps.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from prefect import Flow, flow_engine, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from cai_common import exit_without_final_collection, is_transient
from flows.orchestration import run
from flows.paths.metrics import artifact_table
from flows.store import connector_config, run_records
from flows.store.config_store import require_shared_store

# A flow run's own process (a cold run, `cai run`) ends when its record is closed, not 0.6 s later.
exit_without_final_collection()


def heartbeats_end_with_the_run() -> None:
    """Prefect's flow-run heartbeat thread sleeps in 1 s steps, and its sync engine joins the thread when
    the run ends: every flow run (`cai run`, a worker's run) waited 0-1 s after its final state before
    its process could end or its worker slot free up. The engine gets Prefect's own non-joining form
    of the same heartbeats (the one its async engine uses): the daemon thread stops at its next step
    and sends nothing for a run in a final state. Heartbeats themselves are unchanged."""
    send = flow_engine._send_heartbeats
    if isinstance(send, functools.partial) or "join_on_exit" not in inspect.signature(send).parameters:
        return  # done already, or a Prefect whose heartbeats work otherwise: left as it is
    flow_engine._send_heartbeats = functools.partial(send, join_on_exit=False)


heartbeats_end_with_the_run()


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry connection problems, never config or data errors."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the state carries no readable exception: do not retry blindly
        return False
    return isinstance(exc, BaseException) and is_transient(exc)


# No cache and no persisted results: task inputs and outputs carry connector secrets.
_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
_DB_TASK_OPTIONS: dict[str, Any] = {
    **_TASK_OPTIONS,
    "retries": 3,
    "retry_delay_seconds": [1, 2, 4],
    "retry_condition_fn": _retry_transient,
}


@task(name="create_run_record", **_DB_TASK_OPTIONS)
def create_run_record(connector_id: int, prefect_flow_run_id: str | None) -> int:
    """Insert the `started` run record and return its id (spec 4.2)."""
    return run_records.create_run_record(connector_id, prefect_flow_run_id)


@task(name="read_connector_config", **_DB_TASK_OPTIONS)
def read_connector_config(connector_id: int) -> dict[str, Any]:
    """Read, merge and validate the connector's config (spec 4.1)."""
    return connector_config.read_connector_config(connector_id)


@task(name="update_run_record", **_DB_TASK_OPTIONS)
def update_run_record(
    run_id: int,
    status: run_records.RunStatus,
    rows_ingested: int | None = None,
    log_summary: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Close the run record as `success` or `failed` (spec 4.4)."""
    run_records.update_run_record(run_id, status, rows_ingested, log_summary, metrics)


@task(name="run_dlt_pipeline", **_TASK_OPTIONS)
def run_dlt_pipeline(config: dict[str, Any]) -> dict[str, Any]:
    """Run the connector's data path (spec 4.3); errors come back as a `failed` result, never raised."""
    return run.run_pipeline(config, get_run_logger())


def _publish(connector_id: int, result: dict[str, Any]) -> None:
    """Load metrics as a Prefect table artifact; a failure here never fails the run."""
    try:
        rows = artifact_table(result.get("metrics") or {})
        create_table_artifact(
            table=rows or [{"status": result["status"], "rows": result["rows_ingested"]}],
            key=f"connector-{connector_id}-load",
            description=f"{result['status']}: {result['log_summary'][:500]}",
        )
    except Exception as exc:
        get_run_logger().warning("connector %s: could not publish the load artifact: %s", connector_id, exc)


PREFECT_STEPS = run.Steps(
    create_record=create_run_record,
    read_config=read_connector_config,
    run_pipeline=run_dlt_pipeline,
    close_record=update_run_record,
    publish=_publish,
    logger=get_run_logger,
    prefect=True,
)


class ConnectorFlow(Flow[..., dict[str, Any]]):
    """Prefect's flow, whose parameters (a connector id, a flow-run id or None) are stored as they are.

    Prefect turns a flow's parameters into JSON with FastAPI's `jsonable_encoder` when it creates the
    flow run, and imports FastAPI and Starlette for it: 0.1-0.2 s of every `cai run` through a
    Prefect server, for two values that are JSON already. Anything else goes to Prefect's own.
    """

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if all(value is None or type(value) in (int, str) for value in parameters.values()):
            return dict(parameters)
        return super().serialize_parameters(parameters)


def _flow(function: Any) -> ConnectorFlow:
    return ConnectorFlow(function, name="run_connector_pipeline", flow_run_name="connector-{connector_id}")


@_flow
def run_connector_pipeline(connector_id: int, prefect_flow_run_id: str | None = None) -> dict[str, Any]:
    """Run one connector end to end and record the run in `cai_connector_runs`.

    Args:
        connector_id: id in `cai_connectors`.
        prefect_flow_run_id: stored on the run record; defaults to this Prefect flow run's id.

    Returns:
        ``{"status", "rows_ingested", "log_summary", "run_id", "connector_id", "prefect_flow_run_id",
        "metrics"}`` for a successful run.

    Raises:
        ConnectorRunFailed: after the run record is closed as `failed`; ``.result`` holds the dict.
    """
    context = FlowRunContext.get()
    if context is not None and getattr(context.flow_run, "deployment_id", None):
        # The platform's run: recorded where the platform reads, never in an embedded database.
        require_shared_store(f"connector {connector_id}: a flow run of a deployment")
    return run.run_connector(connector_id, prefect_flow_run_id or flow_run.get_id(), PREFECT_STEPS)
