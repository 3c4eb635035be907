"""run_connector_pipeline end to end: real PostgreSQL, real Prefect server, folder of CSVs -> tables."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cai_common import ConnectorRunFailed
from flows import paths as data_paths
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run, list_runs
from tests.awkward import AWKWARD_ROWS, awkward_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _rows(url: str, schema: str, table: str, order_by: str = "id") -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
        sql.Identifier(schema), sql.Identifier(table), sql.Identifier(order_by)
    )
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query).fetchall()


def _failed(connector_id: int) -> dict[str, Any]:
    """Run a connector expected to fail; return its (closed) run record."""
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    result = caught.value.result
    assert result["status"] == "failed"
    record = get_run(result["run_id"])
    assert record is not None
    assert record["status"] == "failed" and record["finished_at"] is not None
    assert record["log_summary"] == result["log_summary"]
    return record


def test_folder_of_csvs_lands_in_postgres_with_values_intact(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    awkward_csv(incoming / "Visit Notes.csv")
    awkward_csv(incoming / "second.csv", rows=AWKWARD_ROWS[:2])
    (incoming / "ignored.txt").write_text("not a csv")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"}, "postgres", {**warehouse, "schema": schema_name}
    )

    result = run_connector_pipeline(connector_id)

    assert result["status"] == "success"
    assert result["rows_ingested"] == len(AWKWARD_ROWS) + 2
    rows = _rows(config_store, schema_name, "visit_notes")  # file stem, normalised by dlt
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["note"] == 'says "hello", then leaves'
    assert rows[2]["note"] == "line one\nline two" and rows[2]["name"] == "李小龙"
    assert rows[3]["name"] is None and rows[3]["amount"] is None and rows[3]["seen_at"] is None
    assert rows[1]["seen_at"] == datetime(2024, 3, 1, 21, 59, 59, tzinfo=UTC)  # +02:00 kept as the same instant
    assert Decimal(str(rows[2]["amount"])) == Decimal("1000000.25")
    assert [r["flag"] for r in rows] == [True, False, None, True, False]
    assert len(_rows(config_store, schema_name, "second")) == 2

    record = get_run(result["run_id"])
    assert record is not None
    assert (record["status"], record["rows_ingested"]) == ("success", 7)
    assert record["prefect_flow_run_id"] == result["prefect_flow_run_id"] is not None
    assert "loaded 7 rows from 2 file(s)" in record["log_summary"]
    metrics = record["metrics"]
    assert metrics["row_counts"] == {"visit_notes": 5, "second": 2}
    assert re.fullmatch(rf"connector_{connector_id}_[0-9a-f]{{12}}", metrics["pipeline_name"])
    assert metrics["load_files"] >= 2 and metrics["load_bytes"] > 0
    assert set(metrics["durations_s"]) >= {"extract", "normalize", "load"}
    assert sorted((f["table"], f["rows"], f["status"]) for f in metrics["files"]) == [
        ("second", 2, "loaded"), ("visit_notes", 5, "loaded")
    ]

    artifact = _latest_artifact(f"connector-{connector_id}-load")
    assert artifact.flow_run_id is not None and str(artifact.flow_run_id) == result["prefect_flow_run_id"]
    assert sorted((row["table"], row["rows"]) for row in json.loads(artifact.data)) == [
        ("second", 2), ("visit_notes", 5)
    ]


def _latest_artifact(key: str) -> Any:
    """The newest Prefect artifact with this key, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
    assert artifacts, f"no artifact {key}"
    return artifacts[0]


def test_table_name_and_replace_put_every_file_in_one_table(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    awkward_csv(incoming / "a.csv", rows=AWKWARD_ROWS[:3])
    awkward_csv(incoming / "b.csv", rows=AWKWARD_ROWS[3:])
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
        "postgres", {**warehouse, "schema": schema_name, "table_name": "visits", "write_disposition": "replace"},
    )
    first = run_connector_pipeline(connector_id)
    second = run_connector_pipeline(connector_id)
    assert first["rows_ingested"] == second["rows_ingested"] == 5
    assert len(_rows(config_store, schema_name, "visits")) == 5  # replaced, not doubled


def test_explicit_prefect_flow_run_id_is_stored(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str
) -> None:
    awkward_csv(incoming / "one.csv", rows=AWKWARD_ROWS[:1])
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"}, "postgres", {**warehouse, "schema": schema_name}
    )
    result = run_connector_pipeline(connector_id, prefect_flow_run_id="backend-run-77")
    record = get_run(result["run_id"])
    assert record is not None and record["prefect_flow_run_id"] == "backend-run-77"


def test_no_matching_files_is_a_successful_empty_run(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str
) -> None:
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"}, "postgres", {**warehouse, "schema": schema_name}
    )
    result = run_connector_pipeline(connector_id)
    assert (result["status"], result["rows_ingested"]) == ("success", 0)
    assert "no files matched `*.csv`" in result["log_summary"]


def test_malformed_csv_fails_the_run_naming_the_file(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str
) -> None:
    (incoming / "broken.csv").write_text("id,name\n1,a\n2,b,extra\n")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"}, "postgres", {**warehouse, "schema": schema_name}
    )
    record = _failed(connector_id)
    assert "broken.csv" in record["log_summary"]
    assert "Expected 2 columns, got 3" in record["log_summary"]


def test_bad_config_fails_the_run_with_the_field_in_the_summary(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path
) -> None:
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)}, "postgres", {**warehouse, "port": "abc"}
    )
    record = _failed(connector_id)
    assert record["log_summary"] == f"connector {connector_id}: destination `port` must be an integer, got `'abc'`"


def test_unreachable_destination_fails_without_leaking_its_password(
    make_connector: Callable[..., int], incoming: Path
) -> None:
    awkward_csv(incoming / "one.csv", rows=AWKWARD_ROWS[:1])
    secret = "Sup3r-S3cret-pw"
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
        "postgres", {"host": "127.0.0.1", "port": 1, "database": "nowhere", "username": "u", "password": secret},
    )
    record = _failed(connector_id)
    assert "load" in record["log_summary"] or "connect" in record["log_summary"].lower()
    assert secret not in record["log_summary"]
    assert secret not in str(record["metrics"])


def test_unsupported_pair_fails_listing_the_supported_paths(make_connector: Callable[..., int]) -> None:
    connector_id = make_connector(
        "postgres", {"connection_string": "postgresql://u:p@127.0.0.1:9/db", "query": "SELECT 1"},
        "rest_api", {"url": "http://127.0.0.1:9/upload"},
    )
    record = _failed(connector_id)
    assert "no data path from source `sql_database` to destination `rest_api`" in record["log_summary"]
    assert "filesystem -> postgres" in record["log_summary"]


def test_a_crash_inside_the_data_path_still_closes_the_record(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(connector: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(data_paths, "files_to_table", crash)
    connector_id = make_connector("filesystem", {"path": str(incoming)}, "postgres", warehouse)
    record = _failed(connector_id)
    assert "RuntimeError: disk on fire" in record["log_summary"]


def test_unknown_connector_still_gets_a_failed_record(config_store: str) -> None:
    record = _failed(987654)
    assert record["connector_id"] == 987654
    assert record["log_summary"] == "connector 987654 not found"


def test_recursive_glob_reaches_nested_folders(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    (incoming / "2024" / "q1").mkdir(parents=True)
    awkward_csv(incoming / "2024" / "q1" / "visits.csv", rows=AWKWARD_ROWS[:2])
    awkward_csv(incoming / "visits_top.csv", rows=AWKWARD_ROWS[2:])
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "**/*.csv"},
        "postgres", {**warehouse, "schema": schema_name, "table_name": "visits"},
    )
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == len(AWKWARD_ROWS)
    assert [r["id"] for r in _rows(config_store, schema_name, "visits")] == [1, 2, 3, 4, 5]


def test_an_interrupt_still_closes_the_record_as_failed(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(connector: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(data_paths, "files_to_table", interrupted)
    connector_id = make_connector("filesystem", {"path": str(incoming)}, "postgres", warehouse)
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - Prefect may wrap the interrupt
        run_connector_pipeline(connector_id)
    assert not isinstance(caught.value, ConnectorRunFailed)
    [record] = list_runs(connector_id)
    assert (record["status"], record["log_summary"]) == ("failed", "run interrupted")
    assert record["finished_at"] is not None


def test_a_second_run_of_a_connector_waits_for_the_first_and_a_killed_holder_frees_it_at_once(
    config_store: str,
) -> None:
    """The per-connector run lock: held across sessions, timed out with a clear error, released when
    its holder's process dies (no lease to lapse)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from flows.orchestration.concurrency import RUN_LOCK_NAMESPACE, one_run_per_connector

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom flows.orchestration.concurrency import one_run_per_connector\n"
         "with one_run_per_connector(424242, url=sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n",
         config_store], stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (pytest.raises(TimeoutError, match="another run held it for over 1 s"),
              one_run_per_connector(424242, timeout=1, url=config_store)):
            pass
        with one_run_per_connector(424243, timeout=1, url=config_store):  # another connector: no wait
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with one_run_per_connector(424242, timeout=10, url=config_store):
            with psycopg.connect(config_store) as conn:
                held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                                    " AND objid = 424242 AND granted", (RUN_LOCK_NAMESPACE,)).fetchone()
            assert held == (1,)
        assert time.monotonic() - started < 2
    finally:
        holder.kill()


def test_a_flow_run_ends_without_waiting_for_its_heartbeat_thread() -> None:
    """Prefect's heartbeat thread sleeps in 1 s steps; its sync engine joined it, so every run's process
    waited up to a second after its final state. With the flow module loaded the engine's heartbeats
    (Prefect's own function, driven here as the engine drives it) are sent as before, the run's end
    does not wait for the thread, and the thread stops by itself without sending another."""
    import logging
    import threading
    import time

    from prefect import flow_engine

    class Engine:  # what `_send_heartbeats` reads of Prefect's FlowRunEngine
        heartbeat_seconds = 30
        flow_run = None
        logger = logging.getLogger("test")

        def __init__(self) -> None:
            self.sent: list[float] = []

        def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
            return {}, []

        def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
            self.sent.append(time.monotonic())

    engine = Engine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not engine.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        (heartbeat,) = set(threading.enumerate()) - before
    assert engine.sent, "no heartbeat was sent"
    assert heartbeat.is_alive(), "the run's end waited for the heartbeat thread"
    heartbeat.join(5)
    assert not heartbeat.is_alive() and len(engine.sent) == 1
