"""dlt resources of a read-only query: one exported CSV file, or its rows as Arrow batches."""

from __future__ import annotations

import uuid
from pathlib import Path

import dlt
from dlt.extract.resource import DltResource

from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.export import export_csv
from dlt_sources.sql_database.readers import QueryReport, query_batches


def query_csv_file(
    config: SqlDatabaseSourceConfig, workdir: Path, file_name: str, report: QueryReport,
    connector_id: int | None = None,
) -> DltResource:
    """A dlt resource that exports the query to a local CSV and yields its manifest for a file destination."""

    def exported_files() -> object:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{uuid.uuid4().hex}.csv"
        size = export_csv(config, path, report, connector_id)
        yield {"local_path": str(path), "file_name": file_name, "rows": report.rows, "bytes": size}

    return dlt.resource(exported_files, name="exported_files")


def query_rows(
    config: SqlDatabaseSourceConfig, table_name: str, report: QueryReport, connector_id: int | None = None
) -> DltResource:
    """A dlt resource yielding the query's rows as Arrow batches into ``table_name``."""

    def rows() -> object:
        yield from query_batches(config, report, connector_id)

    return dlt.resource(rows, name=table_name)
