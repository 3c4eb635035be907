"""The Prefect flow `run_connector_pipeline`: record the run, read the config, run dlt, close the record."""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from cai_common import ConnectorRunFailed, explain, is_transient, mask_secrets
from flows.orchestration.concurrency import describe, one_run_per_connector, wait_seconds
from flows.orchestration.heartbeat import heartbeat, sweep_stale_runs
from flows.paths import data_path_for
from flows.paths.metrics import artifact_table
from flows.store import connector_config, run_records
from flows.store.connector_config import ConnectorConfig

# run_records.update_run_record stores at most this much summary: enough for a traceback's last lines.
MAX_SUMMARY = 4000


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
    logger = get_run_logger()
    connector = ConnectorConfig.from_dict(config)
    secrets = connector.secret_values()
    label = f"connector {connector.connector_id} ({connector.connector_name})"
    for warning in connector.warnings():
        logger.warning("%s: %s", label, warning)
    started = time.monotonic()
    try:
        path = data_path_for(connector)
        logger.info("%s: %s -> %s via %s", label, connector.source_type, connector.destination_type, path.__name__)
        outcome = path(connector)
    except Exception as exc:
        logger.error("%s: %s", label, mask_secrets(traceback.format_exc(), secrets))
        return {
            "status": "failed",
            "rows_ingested": 0,
            "log_summary": mask_secrets(f"{label}: {explain(exc)}", secrets),
            "metrics": _masked({**getattr(exc, "metrics", {}), "duration_s": round(time.monotonic() - started, 3)},
                               secrets),
        }
    summary = f"{label}: {outcome.summary}"
    if connector.warnings():
        summary += "; warnings: " + "; ".join(connector.warnings())
    if outcome.metrics.get("inspect"):
        summary += f"; inspect: {outcome.metrics['inspect']}"
    logger.info(mask_secrets(summary, secrets))
    return {
        "status": "success",
        "rows_ingested": outcome.rows,
        "log_summary": mask_secrets(summary, secrets),
        "metrics": _masked({**outcome.metrics, "duration_s": round(time.monotonic() - started, 3)}, secrets),
    }


def _masked(metrics: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """Metrics with secrets masked: per-file errors quote library messages, which may quote anything."""
    return dict(json.loads(mask_secrets(json.dumps(metrics, default=str), secrets)))


@flow(name="run_connector_pipeline", flow_run_name="connector-{connector_id}")
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
    logger = get_run_logger()
    flow_run_id = prefect_flow_run_id or flow_run.get_id()
    _sweep(logger)
    with contextlib.ExitStack() as slot:
        try:
            slot.enter_context(one_run_per_connector(connector_id))
        except Exception as exc:  # waited too long, or the Prefect API refused the limit: fail, recorded
            problem = (f"connector {connector_id}: another run of this connector held it for over "
                       f"{wait_seconds():.0f} s" if isinstance(exc, TimeoutError)
                       else f"connector {connector_id}: could not take the connector's run slot: {explain(exc)}")
            logger.error(problem)
            return _finish(connector_id, flow_run_id, _record(connector_id, flow_run_id, logger),
                           {"status": "failed", "rows_ingested": 0, "log_summary": problem, "metrics": {}})
        logger.info("connector %s: holds its run lock (%s)", connector_id, describe(connector_id))
        run_id = _record(connector_id, flow_run_id, logger)
        outcome: dict[str, Any] | None = None
        try:
            with heartbeat(run_id):
                config = read_connector_config(connector_id)
                outcome = run_dlt_pipeline(config)
        except Exception as exc:
            logger.error(mask_secrets(explain(exc)))
            outcome = {"status": "failed", "rows_ingested": 0, "log_summary": mask_secrets(explain(exc)),
                       "metrics": {}}
        finally:
            if outcome is None and run_id is not None:  # cancelled or interrupted: still close the record
                _close(run_id, {"status": "failed", "rows_ingested": 0, "log_summary": "run interrupted",
                                "metrics": {}})
        return _finish(connector_id, flow_run_id, run_id, outcome)


def _sweep(logger: Any) -> None:
    """Close runs of dead workers before starting; never fails this run."""
    try:
        for run in sweep_stale_runs():
            logger.warning("run %s of connector %s: worker stopped responding; closed as failed",
                           run["id"], run["connector_id"])
    except Exception as exc:
        logger.warning("could not sweep stale runs: %s", mask_secrets(str(exc)))


def _record(connector_id: int, flow_run_id: str | None, logger: Any) -> int | None:
    """Create the run record; spec 4.2: the flow goes on without one, loudly."""
    try:
        return create_run_record(connector_id, flow_run_id)
    except Exception as exc:
        logger.warning("connector %s: could not create a run record: %s", connector_id, mask_secrets(str(exc)))
        return None


def _finish(connector_id: int, flow_run_id: str | None, run_id: int | None, outcome: dict[str, Any]) -> dict[str, Any]:
    """Close the record, publish the artifact, and raise ConnectorRunFailed unless the run succeeded."""
    outcome["log_summary"] = outcome["log_summary"][:MAX_SUMMARY]
    if run_id is not None:
        _close(run_id, outcome)
    result = {**outcome, "run_id": run_id, "connector_id": connector_id, "prefect_flow_run_id": flow_run_id}
    _publish(connector_id, result)
    if result["status"] != "success":
        raise ConnectorRunFailed(connector_id, result)
    return result


def _close(run_id: int, outcome: dict[str, Any]) -> None:
    """Close the record through the task; fall back to a direct update if the task machinery is gone."""
    args = (run_id, outcome["status"], outcome["rows_ingested"], outcome["log_summary"], outcome["metrics"])
    try:
        update_run_record(*args)
    except BaseException:
        run_records.update_run_record(*args)


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
