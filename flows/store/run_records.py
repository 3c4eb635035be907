"""Run history in `cai_connector_runs` (spec 4.2 and 4.4), plus this runner's `metrics` column.

Times are UTC in the spec's `timestamp without time zone` columns, whatever the session's TimeZone.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg2.extras import Json

from flows.store.config_store import UTC_NOW, connect

RunStatus = Literal["success", "failed"]


def create_run_record(connector_id: int, prefect_flow_run_id: str | None, url: str | None = None) -> int:
    """Insert a `started` run and return its id (spec 4.2)."""
    with connect(url) as conn:
        row = conn.execute(
            "INSERT INTO cai_connector_runs (connector_id, status, prefect_flow_run_id, started_at, heartbeat_at) "
            f"VALUES (%s, 'started', %s, {UTC_NOW}, {UTC_NOW}) RETURNING id",
            (connector_id, prefect_flow_run_id),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def update_run_record(
    run_id: int,
    status: RunStatus,
    rows_ingested: int | None = None,
    log_summary: str | None = None,
    metrics: dict[str, Any] | None = None,
    url: str | None = None,
) -> None:
    """Close a run as `success` or `failed` (spec 4.4), storing load metrics when given."""
    if status not in ("success", "failed"):
        raise ValueError(f"run status must be `success` or `failed`, got `{status}`")
    with connect(url) as conn:
        conn.execute(
            f"UPDATE cai_connector_runs SET status = %s, finished_at = {UTC_NOW}, "
            "rows_ingested = COALESCE(%s, rows_ingested), log_summary = COALESCE(%s, log_summary), "
            "metrics = COALESCE(%s, metrics) WHERE id = %s",
            (status, rows_ingested, log_summary, Json(metrics) if metrics is not None else None, run_id),
        )


def get_run(run_id: int, url: str | None = None) -> dict[str, Any] | None:
    """One run record as a dict."""
    with connect(url) as conn:
        return conn.execute("SELECT * FROM cai_connector_runs WHERE id = %s", (run_id,)).fetchone()


def list_runs(connector_id: int | None = None, limit: int = 20, url: str | None = None) -> list[dict[str, Any]]:
    """The most recent runs, newest first, optionally of one connector."""
    with connect(url) as conn:
        return conn.execute(
            "SELECT * FROM cai_connector_runs WHERE (%s::int IS NULL OR connector_id = %s) "
            "ORDER BY started_at DESC, id DESC LIMIT %s",
            (connector_id, connector_id, limit),
        ).fetchall()


def find_run_by_flow_run(prefect_flow_run_id: str, url: str | None = None) -> dict[str, Any] | None:
    """The newest run record carrying this Prefect flow-run id."""
    with connect(url) as conn:
        return conn.execute(
            "SELECT * FROM cai_connector_runs WHERE prefect_flow_run_id = %s ORDER BY id DESC LIMIT 1",
            (prefect_flow_run_id,),
        ).fetchone()
