"""A read-only query -> a PostgreSQL table through run_connector_pipeline, on awkward data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from dlt_sources.sql_database import QueryReport, SqlDatabaseSourceConfig, query_batches
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run
from tests.awkward import AWKWARD_ROWS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_query_rows_land_in_a_table_with_types_and_values_intact(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    columns = "id, name, note, amount, seen_at, active, born, payload, ref, stay"
    query = f"SELECT {columns} FROM {source_schema}.visits WHERE id > 0"
    connector_id = make_connector("postgres", {**reader, "query": query, "batch_size": 2},
                                  "postgres", {**warehouse, "schema": schema_name}, name="Nightly Visits")
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == len(AWKWARD_ROWS)
    types = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = "
             "'{}'::regclass AND a.attnum > 0 ORDER BY a.attnum")
    assert _rows(config_store, types.format(f"{schema_name}.nightly_visits")) == \
        _rows(config_store, types.format(f"{source_schema}.visits"))
    differing = _rows(config_store, (
        f"SELECT count(*) FROM {schema_name}.nightly_visits d FULL JOIN ({query}) s ON s.id = d.id WHERE "
        + " OR ".join(f"d.{c} IS DISTINCT FROM s.{c}" for c in columns.split(", "))))
    assert differing == [(0,)]
    metrics = get_run(result["run_id"])["metrics"]  # type: ignore[index]
    assert (metrics["query"]["reader"], metrics["query"]["rows"]) == ("copy stream", len(AWKWARD_ROWS))
    assert metrics["reconciliation"]["agree"] is True


def test_an_existing_table_whose_types_would_change_values_is_refused(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    """Loading numeric(14,3) values into a bigint column would change them: the run names the table, the
    column and both types, and loads nothing."""
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE SCHEMA {schema_name}")
        conn.execute(f"CREATE TABLE {schema_name}.amounts (id bigint, amount bigint)")
    connector_id = make_connector("postgres", {**reader, "query": f"SELECT id, amount FROM {source_schema}.visits"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "amounts"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert (f"destination `table_name` `{schema_name}`.`amounts` already has column `amount` as bigint, but the "
            "query returns numeric(14,3)") in caught.value.result["log_summary"]
    assert _rows(config_store, f"SELECT count(*) FROM {schema_name}.amounts") == [(0,)]


def test_a_non_select_is_rejected_before_anything_runs(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector("sql_database", {**reader, "query": f"DELETE FROM {source_schema}.visits"},
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
    # A superuser may use the sequence; the READ ONLY transaction is what stops it.
    query = f"SELECT nextval('{source_schema}.ticket')"
    connector_id = make_connector("database", {**warehouse, "allow_superuser": True, "query": query},
                                  "postgres", {**warehouse, "schema": schema_name})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "read-only transaction" in caught.value.result["log_summary"]
    assert _rows(config_store, f"SELECT is_called FROM {source_schema}.ticket") == [(False,)]


def test_the_arrow_reader_falls_back_to_a_cursor_for_types_connectorx_cannot_read(
    config_store: str, source_schema: str,
) -> None:
    """`query_batches` (Arrow batches for Arrow consumers) honours batch_size through its psycopg fallback."""
    config = SqlDatabaseSourceConfig.parse(
        {"connection_string": config_store, "query": f"SELECT id, stay FROM {source_schema}.visits ORDER BY id",
         "batch_size": 2}, connector_id=1, side="source")
    report = QueryReport()
    batches = list(query_batches(config, report, 1))
    assert (report.reader, report.batches, report.rows) == ("psycopg", 3, len(AWKWARD_ROWS))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert batches[0].column("stay").to_pylist() == ["02:00:00", "1 day 02:00:00"]


def test_merge_on_primary_key_updates_rows_on_the_next_run(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector(
        "sql_database", {**reader, "query": f"SELECT id, name FROM {source_schema}.visits"},
        "postgres", {**warehouse, "schema": schema_name, "table_name": "names", "write_disposition": "merge",
                     "primary_key": "id"},
    )
    run_connector_pipeline(connector_id)
    with psycopg.connect(config_store) as conn:
        conn.execute(f"UPDATE {source_schema}.visits SET name = 'Renamed' WHERE id = 1")
    run_connector_pipeline(connector_id)
    names = _rows(config_store, f"SELECT id, name FROM {schema_name}.names ORDER BY id")
    assert len(names) == len(AWKWARD_ROWS) and names[0] == (1, "Renamed")
    # the rows' COPY went to dlt's staging dataset; its landed jobs were forgotten with the load
    assert _rows(config_store, f"SELECT count(*) FROM {schema_name}_staging._cai_landed_jobs") == [(0,)]
    assert _rows(config_store, f"SELECT count(*) FROM {schema_name}._cai_landed_jobs") == [(0,)]


def test_a_query_failing_mid_stream_commits_none_of_its_rows(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    """Rows stream from the source's COPY into the destination's: a source that fails after 49,999 rows
    fails the destination's COPY too, which rolls back; earlier rows of the table stay as they were."""
    good = make_connector("postgres", {**reader, "query": "SELECT g AS n, 1 AS ratio FROM generate_series(1, 3) g"},
                          "postgres", {**warehouse, "schema": schema_name, "table_name": "ratios"}, name="first")
    run_connector_pipeline(good)
    query = "SELECT g AS n, 100000 / (50000 - g) AS ratio FROM generate_series(1, 90000) g"
    failing = make_connector("postgres", {**reader, "query": query},
                             "postgres", {**warehouse, "schema": schema_name, "table_name": "ratios"}, name="second")
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(failing)
    assert "source query failed" in caught.value.result["log_summary"]
    assert "division by zero" in caught.value.result["log_summary"]
    assert _rows(config_store, f"SELECT n FROM {schema_name}.ratios ORDER BY n") == [(1,), (2,), (3,)]


def test_a_load_that_never_opened_the_stream_fails_instead_of_loading_nothing(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], schema_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the load job ever read the placeholder file (a package copied, not linked), the run says so."""
    from cai_common import streams

    monkeypatch.setattr(streams, "opener_for", lambda path: None)
    connector_id = make_connector("postgres", {**reader, "query": "SELECT g AS n FROM generate_series(1, 3) g"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "never"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "rows never reached the table" in caught.value.result["log_summary"]


def test_what_postgresqls_text_format_must_escape_arrives_as_it_left(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], source_schema: str,
    schema_name: str, config_store: str,
) -> None:
    """Rows travel between the two servers in COPY's text format: backslashes, tabs, newlines, a literal
    `\\N`, COPY's end-of-data marker `\\.` on a line of its own, NUL-free control characters, empty strings
    and NULLs (text, arrays, jsonb, bytea) land equal to the source's, compared in SQL."""
    values = ["E'back\\\\slash'", "E'tab\\there'", "E'new\\nline\\r\\ncrlf'", "E'\\\\N'", "E'\\\\.'",
              "E'first\\n\\\\.\\nlast'", "E'\\x01\\x1f bell\\x07'", "''", "NULL", "' '"]
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE TABLE {source_schema}.escapes (id int, t text, a text[], j jsonb, b bytea)")
        for i, value in enumerate(values):
            conn.execute(f"INSERT INTO {source_schema}.escapes VALUES ({i}, {value}, ARRAY[{value}, 'x'], "
                         f"jsonb_build_object('v', {value}::text), convert_to({value}::text, 'UTF8'))")
    query = f"SELECT * FROM {source_schema}.escapes"
    connector_id = make_connector("postgres", {**reader, "query": query},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "escapes"})
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == len(values)
    differing = _rows(config_store, (
        f"SELECT count(*) FROM {schema_name}.escapes d FULL JOIN ({query}) s ON s.id = d.id WHERE d.id IS NULL "
        "OR s.id IS NULL OR " + " OR ".join(f"d.{c} IS DISTINCT FROM s.{c}" for c in "tajb")))
    assert differing == [(0,)]
    assert _rows(config_store, f"SELECT count(*) FROM {schema_name}.escapes WHERE t IS NULL") == [(1,)]
