"""A kind added from the test folder alone (`tests/memory_kind`, one registry call per side) runs end to end:
files from it into PostgreSQL, files from it into another of its folders, and a query exported into it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import psycopg
import pytest

from dlt_destinations import DESTINATIONS
from dlt_sources import SOURCES
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.config_store import init_db
from tests.memory_kind import DESTINATION, SOURCE

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def memory_kinds(config_store: str) -> Iterator[Any]:
    SOURCES.register(SOURCE)
    DESTINATIONS.register(DESTINATION)
    init_db(config_store)  # seeds the new kinds' lookup codes
    memory = fsspec.filesystem("memory")
    try:
        yield memory
    finally:
        SOURCES.unregister(SOURCE.code)
        DESTINATIONS.unregister(DESTINATION.code)
        for folder in ("/incoming", "/outgoing"):
            if memory.exists(folder):
                memory.rm(folder, recursive=True)


def test_the_new_kinds_get_lookup_codes_and_join_the_supported_paths(memory_kinds: Any, config_store: str) -> None:
    from flows.paths import supported_pairs

    with psycopg.connect(config_store) as conn:
        codes = conn.execute("SELECT lookup_type, lookup_code FROM ad_lookup_codes WHERE lookup_code LIKE '%%memory%%'"
                             " OR lookup_code = 'ram_files' ORDER BY 1, 2").fetchall()
    assert codes == [("destination_type", "memory_folder"), ("source_type", "memory_files"),
                     ("source_type", "ram_files")]
    pairs = supported_pairs()
    assert {"memory_files -> postgres", "memory_files -> memory_folder", "sql_database -> memory_folder",
            "memory_files -> sftp", "s3 -> memory_folder"} <= set(pairs)
    assert "sql_database -> rest_api" not in pairs


def test_csv_files_of_the_new_source_kind_land_in_postgres(
    memory_kinds: Any, make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    memory_kinds.pipe_file("/incoming/labs.csv", b"mrn,value,taken_at\n00123,2.50,2024-01-02 03:04:05.123456\n"
                                                 b"04560,,2024-01-03 00:00:00\n")
    connector_id = make_connector("ram_files", {"folder": "incoming", "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    result = run_connector_pipeline(connector_id)
    assert result["status"] == "success" and result["rows_ingested"] == 2, result["log_summary"]
    with psycopg.connect(config_store) as conn:
        rows = conn.execute(f'SELECT mrn, value::text, taken_at::text FROM "{schema_name}".labs ORDER BY mrn'
                            ).fetchall()
    assert rows == [("00123", "2.50", "2024-01-02 03:04:05.123456"), ("04560", None, "2024-01-03 00:00:00")]


def test_files_move_between_folders_of_the_new_kinds(
    memory_kinds: Any, make_connector: Callable[..., int],
) -> None:
    memory_kinds.pipe_file("/incoming/a/scan.bin", b"\x00\x01" * 1000)
    memory_kinds.pipe_file("/incoming/notes.txt", b"hello")
    connector_id = make_connector("memory_files", {"folder": "incoming", "file_pattern": "**/*", "transfer": "move"},
                                  "memory_folder", {"folder": "outgoing"})
    result = run_connector_pipeline(connector_id)
    assert "moved 2 of 2 file(s)" in result["log_summary"], result["log_summary"]
    assert memory_kinds.cat_file("/outgoing/a/scan.bin") == b"\x00\x01" * 1000
    assert memory_kinds.cat_file("/outgoing/notes.txt") == b"hello"
    assert memory_kinds.find("/incoming") == []


def test_a_query_exports_into_the_new_destination_kind(
    memory_kinds: Any, make_connector: Callable[..., int], reader: dict[str, Any],
) -> None:
    connector_id = make_connector("postgres", {**reader, "query": "SELECT 1 AS id, 'x,y' AS label",
                                               "csv_filename": "one.csv"},
                                  "memory_folder", {"folder": "outgoing"})
    result = run_connector_pipeline(connector_id)
    assert result["status"] == "success", result["log_summary"]
    assert memory_kinds.cat_file("/outgoing/one.csv") == b'id,label\n1,"x,y"\n'
