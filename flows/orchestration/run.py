"""The one run sequence: lock -> record -> read config -> run the data path -> close the record.

The Prefect flow (`flows.dlt_pipeline_flow`) runs it with each step as a Prefect task; `run_directly`
runs the same steps as plain calls (the spec's direct execution mode: no Prefect API, no temporary
server), which is what `cai run` and `cai demo` do when `PREFECT_API_URL` is not set. Either way the
run record ends `success` or `failed`, and a failure raises `ConnectorRunFailed` after it is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cai_common import ConnectorRunFailed, explain, mask_secrets, progress

MAX_SUMMARY = 4000
"""The most summary a run record keeps: enough for a traceback's last lines."""


@dataclass(frozen=True)
class Steps:
    """How a run's steps are called: Prefect tasks in the flow, plain functions in a direct run."""

    create_record: Callable[[int, str | None], int]
    read_config: Callable[[int], dict[str, Any]]
    run_pipeline: Callable[[dict[str, Any]], dict[str, Any]]
    close_record: Callable[..., None]
    publish: Callable[[int, dict[str, Any]], None]
    logger: Callable[[], Any]
    prefect: bool = False
    """Runs under a Prefect API: the sweep also records flow runs that ended before their flow began."""


def run_connector(connector_id: int, flow_run_id: str | None, steps: Steps) -> dict[str, Any]:
    """Run one connector end to end and record the run (see the module docstring)."""
    from flows.orchestration.concurrency import describe, one_run_per_connector, wait_seconds
    from flows.orchestration.heartbeat import heartbeat
    from flows.store.config_store import ensure_current_schema

    logger = steps.logger()
    ensure_current_schema()  # a store without this version's tables: stop now, never an unrecorded run
    _sweep(logger, steps.prefect, flow_run_id)
    with contextlib.ExitStack() as slot:
        try:
            slot.enter_context(one_run_per_connector(connector_id))
        except Exception as exc:  # waited too long, or the config store is away: fail, recorded if possible
            problem = (f"connector {connector_id}: another run of this connector held it for over "
                       f"{wait_seconds():.0f} s" if isinstance(exc, TimeoutError)
                       else f"connector {connector_id}: could not take the connector's run lock: {explain(exc)}")
            logger.error(mask_secrets(problem))
            return _finish(connector_id, flow_run_id, _record(connector_id, flow_run_id, steps, logger),
                           {"status": "failed", "rows_ingested": 0, "log_summary": mask_secrets(problem),
                            "metrics": {}}, steps)
        logger.info("connector %s: holds its run lock (%s)", connector_id, describe(connector_id))
        _close_orphans(connector_id, logger, steps.prefect, flow_run_id)
        run_id = _record(connector_id, flow_run_id, steps, logger)
        outcome: dict[str, Any] | None = None
        try:
            with heartbeat(run_id):
                config = steps.read_config(connector_id)
                outcome = steps.run_pipeline(config)
        except Exception as exc:
            logger.error(mask_secrets(explain(exc)))
            outcome = {"status": "failed", "rows_ingested": 0, "log_summary": mask_secrets(explain(exc)),
                       "metrics": {}}
        finally:
            if outcome is None and run_id is not None:  # cancelled or interrupted: still close the record
                _close(run_id, {"status": "failed", "rows_ingested": 0, "log_summary": "run interrupted",
                                "metrics": {}}, steps)
        return _finish(connector_id, flow_run_id, run_id, outcome, steps)


def run_pipeline(config: dict[str, Any], logger: Any) -> dict[str, Any]:
    """Run the connector's data path (spec 4.3); errors come back as a `failed` result, never raised."""
    from flows.paths import data_path_for
    from flows.store.connector_config import ConnectorConfig

    connector = ConnectorConfig.from_dict(config)
    secrets = connector.secret_values()
    label = f"connector {connector.connector_id} ({connector.connector_name})"
    for warning in connector.warnings():
        logger.warning("%s: %s", label, warning)
    started = time.monotonic()
    try:
        path = data_path_for(connector)
        logger.info("%s: %s -> %s via %s", label, connector.source_type, connector.destination_type, path.__name__)
        with progress.watching(progress.logging_every(logger, label)):
            outcome = path(connector)
    except Exception as exc:
        logger.error("%s: %s", label, mask_secrets(traceback.format_exc(), secrets))
        reason = tls_diagnosis(connector, exc) or explain(exc)
        metrics = {**getattr(exc, "metrics", {}), "duration_s": round(time.monotonic() - started, 3)}
        _keep_pipeline(connector.connector_id, metrics, logger)
        return {
            "status": "failed",
            "rows_ingested": 0,
            "log_summary": mask_secrets(f"{label}: {reason}", secrets),
            "metrics": _masked(metrics, secrets),
        }
    _keep_pipeline(connector.connector_id, outcome.metrics, logger)
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
        "metrics": _masked({**outcome.metrics, "duration_s": round(time.monotonic() - started, 3),
                            "process_start": os.environ.get("CAI_PROCESS_START", "cold")}, secrets),
    }


def _keep_pipeline(connector_id: int, metrics: dict[str, Any], logger: Any) -> None:
    """Save the run's dlt pipeline where every machine finds it, and point `inspect` at `cai pipeline`
    (the pipelines directory of this worker may be gone by the time someone looks)."""
    from flows.store.pipeline_snapshots import save_snapshot

    name, folder = metrics.get("pipeline_name"), metrics.get("pipelines_dir")
    if not name or not folder:
        return
    try:
        save_snapshot(folder, name, connector_id)
    except Exception as exc:  # the run's outcome stands; only its inspection is local to this machine
        logger.warning("connector %s: could not save its pipeline for inspection: %s", connector_id,
                       mask_secrets(explain(exc)))
        return
    metrics["inspect"] = f"cai pipeline {connector_id} info"


def tls_diagnosis(connector: Any, exc: BaseException) -> str | None:
    """Which PostgreSQL end refused TLS and which field to change, when ``exc`` is a TLS failure.

    libpq's message names an address, not the config that led there, so each PostgreSQL end is tried
    again (one connection each, only on this failure path) and the first that fails TLS is named.
    """
    import psycopg

    from cai_common import PostgresCredentials
    from cai_common.tls import libpq_reason, tls_failure_in, tls_problem

    if not tls_failure_in(exc):
        return None
    for side, config in (("source", connector.source), ("destination", connector.destination)):
        if not isinstance(config, PostgresCredentials):
            continue
        try:
            psycopg.connect(config.dsn(), connect_timeout=10).close()
        except psycopg.OperationalError as failure:
            problem = tls_problem(str(failure))
            if problem:
                field, meaning = problem
                return (f"{side} `{field}`: TLS to {config.location()} failed: {libpq_reason(str(failure))} "
                        f"({meaning})")
    return None


def run_directly(connector_id: int, flow_run_id: str | None = None) -> dict[str, Any]:
    """The same run without Prefect: plain calls, Python logging (logger `cai.run`), no artifact."""
    from flows.store import connector_config, run_records

    logger = logging.getLogger("cai.run")
    steps = Steps(
        create_record=run_records.create_run_record,
        read_config=connector_config.read_connector_config,
        run_pipeline=lambda config: run_pipeline(config, logger),
        close_record=run_records.update_run_record,
        publish=lambda connector_id, result: None,
        logger=lambda: logger,
    )
    return run_connector(connector_id, flow_run_id, steps)


def _masked(metrics: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """Metrics with secrets masked: per-file errors quote library messages, which may quote anything."""
    return dict(json.loads(mask_secrets(json.dumps(metrics, default=str), secrets)))


def _sweep(logger: Any, prefect: bool = False, flow_run_id: str | None = None) -> None:
    """Close runs of dead workers, end their Prefect flow runs, and record flow runs that died unrecorded,
    before starting; never fails."""
    from flows.orchestration.heartbeat import record_unrecorded_flow_runs, sweep_stale_runs

    closed: list[dict[str, Any]] = []
    try:
        closed = sweep_stale_runs()
        for run in closed:
            logger.warning("run %s of connector %s: worker stopped responding; closed as failed",
                           run["id"], run["connector_id"])
    except Exception as exc:
        logger.warning("could not sweep stale runs: %s", mask_secrets(str(exc)))
    if not prefect:
        return
    _end_flow_runs(closed, flow_run_id, logger)
    try:
        for run in record_unrecorded_flow_runs():
            logger.warning("flow run %s of connector %s ended before it began; recorded as failed run %s",
                           run["prefect_flow_run_id"], run["connector_id"], run["id"])
    except Exception as exc:
        logger.warning("could not record flow runs that ended unrecorded: %s", mask_secrets(str(exc)))


def _close_orphans(connector_id: int, logger: Any, prefect: bool = False, flow_run_id: str | None = None) -> None:
    """With the connector's run lock held, close its runs that are still `started`: their workers died."""
    from flows.orchestration.heartbeat import close_orphaned_runs

    try:
        closed = close_orphaned_runs(connector_id)
    except Exception as exc:
        logger.warning("could not close earlier unfinished runs: %s", mask_secrets(str(exc)))
        return
    for run in closed:
        logger.warning("run %s of connector %s: its worker stopped before closing it; closed as failed",
                       run["id"], run["connector_id"])
    if prefect:
        _end_flow_runs(closed, flow_run_id, logger)


def _end_flow_runs(closed: list[dict[str, Any]], flow_run_id: str | None, logger: Any) -> None:
    """Their Prefect flow runs end too (CRASHED), not RUNNING for good; never fails the run."""
    from flows.orchestration.heartbeat import end_flow_runs_of

    try:
        for ended in end_flow_runs_of(closed, flow_run_id):
            logger.warning("Prefect flow run %s of a dead worker: set CRASHED", ended)
    except Exception as exc:
        logger.warning("could not end the flow runs of dead workers: %s", mask_secrets(str(exc)))


def _record(connector_id: int, flow_run_id: str | None, steps: Steps, logger: Any) -> int | None:
    """Create the run record; spec 4.2: the run goes on without one, loudly."""
    try:
        return steps.create_record(connector_id, flow_run_id)
    except Exception as exc:
        logger.warning("connector %s: could not create a run record: %s", connector_id, mask_secrets(str(exc)))
        return None


def _finish(connector_id: int, flow_run_id: str | None, run_id: int | None, outcome: dict[str, Any],
            steps: Steps) -> dict[str, Any]:
    """Close the record, publish the result, and raise ConnectorRunFailed unless the run succeeded."""
    outcome["log_summary"] = outcome["log_summary"][:MAX_SUMMARY]
    if run_id is not None:
        _close(run_id, outcome, steps)
    result = {**outcome, "run_id": run_id, "connector_id": connector_id, "prefect_flow_run_id": flow_run_id}
    steps.publish(connector_id, result)
    if result["status"] != "success":
        raise ConnectorRunFailed(connector_id, result)
    return result


def _close(run_id: int, outcome: dict[str, Any], steps: Steps) -> None:
    """Close the record through its step; fall back to a direct update if the step machinery is gone."""
    from flows.store import run_records

    args = (run_id, outcome["status"], outcome["rows_ingested"], outcome["log_summary"], outcome["metrics"])
    try:
        steps.close_record(*args)
    except BaseException:
        run_records.update_run_record(*args)
