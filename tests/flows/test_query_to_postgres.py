"""A read-only query -> a PostgreSQL table through run_connector_pipeline, on awkward data."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.run_records import get_run
from tests.awkward import AWKWARD_ROWS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_query_rows_land_in_a_table_with_values_intact(
    make_connector: Callable[..., int], warehouse: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    query = (f"SELECT id, name, note, amount, seen_at, active, born, payload, ref FROM {source_schema}.visits "
             "WHERE id > 0")
    connector_id = make_connector("postgres", {**warehouse, "query": query, "batch_size": 2},
                                  "postgres", {**warehouse, "schema": schema_name}, name="Nightly Visits")
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == len(AWKWARD_ROWS)

    source = _rows(config_store, f"{query} ORDER BY id")
    copied = _rows(config_store, f"SELECT id, name, note, amount, seen_at, active, born, payload, ref "
                                 f"FROM {schema_name}.nightly_visits ORDER BY id")
    assert len(copied) == len(source)
    for src, dst in zip(source, copied, strict=True):
        assert dst[:3] == src[:3]  # ids, unicode names, notes with commas, quotes and newlines, NULLs
        assert (dst[3] is None and src[3] is None) or Decimal(dst[3]) == src[3]  # same decimal value
        assert dst[4] == src[4]  # timestamptz: the same instant
        assert dst[5:7] == src[5:7]
        assert (json.loads(dst[7]) if dst[7] else None) == src[7]  # jsonb -> its JSON text
        assert dst[8] == (str(src[8]) if src[8] else None)  # uuid -> its text
    assert copied[1][4] == datetime(2024, 3, 1, 21, 59, 59, tzinfo=UTC)
    metrics = get_run(result["run_id"])["metrics"]  # type: ignore[index]
    assert (metrics["query"]["rows"], metrics["query"]["batches"]) == (len(AWKWARD_ROWS), 3)
    if "host=/" not in config_store:  # connectorx needs TCP; over a unix socket the cursor reader serves
        assert metrics["query"]["reader"] == "connectorx", metrics["query"]["fallback_reason"]


def test_a_non_select_is_rejected_before_anything_runs(
    make_connector: Callable[..., int], warehouse: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector("sql_database", {**warehouse, "query": f"DELETE FROM {source_schema}.visits"},
                                  "postgres", {**warehouse, "schema": schema_name})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    summary = caught.value.result["log_summary"]
    assert f"connector {connector_id}: source `query` must be a SELECT (or WITH ... SELECT), got `DELETE`" in summary
    assert _rows(config_store, f"SELECT count(*) FROM {source_schema}.visits") == [(len(AWKWARD_ROWS),)]
    assert _rows(config_store, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = "
                               f"'{schema_name}'") == [(0,)]


def test_the_read_only_transaction_stops_a_select_that_writes(
    make_connector: Callable[..., int], warehouse: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector("database", {**warehouse, "query": f"SELECT nextval('{source_schema}.ticket')"},
                                  "postgres", {**warehouse, "schema": schema_name})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "read-only transaction" in caught.value.result["log_summary"]
    assert _rows(config_store, f"SELECT is_called FROM {source_schema}.ticket") == [(False,)]


def test_types_connectorx_cannot_read_fall_back_to_a_cursor_honouring_batch_size(
    make_connector: Callable[..., int], warehouse: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector(
        "sql_database", {**warehouse, "query": f"SELECT id, stay, amount FROM {source_schema}.visits", "batch_size": 2},
        "postgres", {**warehouse, "schema": schema_name, "table_name": "stays"},
    )
    result = run_connector_pipeline(connector_id)
    query = result["metrics"]["query"]
    assert (query["reader"], query["batches"], query["rows"]) == ("psycopg", 3, len(AWKWARD_ROWS))
    assert _rows(config_store, f"SELECT id, stay, amount FROM {schema_name}.stays WHERE id <= 2 ORDER BY id") == [
        (1, "02:00:00", Decimal("12.5")), (2, "1 day 02:00:00", Decimal("-0.01"))
    ]


def test_merge_on_primary_key_updates_rows_on_the_next_run(
    make_connector: Callable[..., int], warehouse: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector(
        "sql_database", {**warehouse, "query": f"SELECT id, name FROM {source_schema}.visits"},
        "postgres", {**warehouse, "schema": schema_name, "table_name": "names", "write_disposition": "merge",
                     "primary_key": "id"},
    )
    run_connector_pipeline(connector_id)
    with psycopg.connect(config_store) as conn:
        conn.execute(f"UPDATE {source_schema}.visits SET name = 'Renamed' WHERE id = 1")
    run_connector_pipeline(connector_id)
    names = _rows(config_store, f"SELECT id, name FROM {schema_name}.names ORDER BY id")
    assert len(names) == len(AWKWARD_ROWS) and names[0] == (1, "Renamed")
