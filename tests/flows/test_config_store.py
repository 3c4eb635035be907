"""The config-store schema: created by versioned migrations, idempotent, with the spec's exact columns."""

from __future__ import annotations

import psycopg
import pytest

from flows.store.config_store import init_db, migrations

# Appendix A of the spec (and the columns for the other three tables): the backend writes
# these with plain SQL, so names and types must match exactly.
SPEC_COLUMNS = {
    "cai_connector_runs": {
        "id": "integer",
        "connector_id": "integer",
        "status": "character varying",
        "prefect_flow_run_id": "character varying",
        "started_at": "timestamp without time zone",
        "finished_at": "timestamp without time zone",
        "rows_ingested": "integer",
        "log_summary": "text",
    },
    "cai_connectors": {
        "id": "integer",
        "name": "character varying",
        "defined_source_id": "integer",
        "defined_destination_id": "integer",
        "source_config_override": "jsonb",
        "destination_config_override": "jsonb",
    },
    "cai_defined_sources": {"id": "integer", "name": "character varying",
                            "source_type_lookup_code_id": "integer", "config": "jsonb"},
    "cai_defined_destinations": {"id": "integer", "name": "character varying",
                                 "destination_type_lookup_code_id": "integer", "config": "jsonb"},
    "ad_lookup_codes": {"id": "integer", "lookup_type": "character varying",
                        "lookup_code": "character varying", "description": "text"},
}

SOURCE_CODES = {"sql_database", "postgres", "database", "filesystem", "s3", "minio"}
DESTINATION_CODES = {"postgres", "s3", "minio", "sftp", "truenas", "nfs", "filesystem", "local", "rest_api"}


def _columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    return dict(rows)


def test_init_db_twice_is_idempotent(fresh_db: str) -> None:
    first = init_db(fresh_db)
    second = init_db(fresh_db)
    assert first == [version for version, _ in migrations()]
    assert second == []
    with psycopg.connect(fresh_db) as conn:
        lookups = conn.execute(
            "SELECT lookup_type, lookup_code, count(*) FROM ad_lookup_codes GROUP BY 1, 2"
        ).fetchall()
    assert all(count == 1 for _, _, count in lookups), "seeds duplicated by the second init-db"
    assert {code for kind, code, _ in lookups if kind == "source_type"} == SOURCE_CODES
    assert {code for kind, code, _ in lookups if kind == "destination_type"} == DESTINATION_CODES


@pytest.mark.parametrize("table", sorted(SPEC_COLUMNS))
def test_spec_columns_exist_with_spec_types(fresh_db: str, table: str) -> None:
    init_db(fresh_db)
    columns = _columns(fresh_db, table)
    for name, data_type in SPEC_COLUMNS[table].items():
        assert columns.get(name) == data_type, f"{table}.{name}"


def test_runs_table_gains_metrics_column(fresh_db: str) -> None:
    init_db(fresh_db)
    assert _columns(fresh_db, "cai_connector_runs")["metrics"] == "jsonb"


def test_init_db_adopts_tables_the_backend_already_created(fresh_db: str) -> None:
    """The backend may have created Appendix A's tables first: init-db keeps them and their rows."""
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "CREATE TABLE cai_connector_runs (id SERIAL PRIMARY KEY, connector_id INTEGER NOT NULL, "
            "status VARCHAR(50) NOT NULL, prefect_flow_run_id VARCHAR(255), started_at TIMESTAMP NOT NULL, "
            "finished_at TIMESTAMP, rows_ingested INTEGER, log_summary TEXT)"
        )
        conn.execute("INSERT INTO cai_connector_runs (connector_id, status, started_at) VALUES (1, 'success', now())")
    init_db(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM cai_connector_runs").fetchone() == (1,)
    assert "metrics" in _columns(fresh_db, "cai_connector_runs")
