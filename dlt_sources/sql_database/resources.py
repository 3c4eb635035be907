"""dlt resources of a read-only query: one exported CSV file, its rows for a PostgreSQL table, or Arrow batches."""

from __future__ import annotations

import uuid
from pathlib import Path

import dlt
from dlt.extract.resource import DltResource

from cai_common import streams
from cai_common.pg_types import dlt_column
from dlt_sources.sql_database.columns import ResultColumn
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.export import EXACT_FORMAT, copy_stream, export_csv
from dlt_sources.sql_database.reports import QueryReport


def query_csv_file(
    config: SqlDatabaseSourceConfig, workdir: Path, file_name: str, report: QueryReport,
    connector_id: int | None = None,
) -> DltResource:
    """A dlt resource that exports the query to a local CSV and yields its manifest for a file destination."""

    def exported_files() -> object:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{uuid.uuid4().hex}.csv"
        size, sha256 = export_csv(config, path, report, connector_id)
        yield {"local_path": str(path), "file_name": file_name, "rows": report.rows, "bytes": size,
               "sha256": sha256}

    return dlt.resource(exported_files, name="exported_files")


def query_rows(
    config: SqlDatabaseSourceConfig, table_name: str, report: QueryReport, connector_id: int | None = None
) -> DltResource:
    """A dlt resource yielding the query's rows as Arrow batches into ``table_name``."""

    from dlt_sources.sql_database.readers import query_batches  # connectorx and pyarrow: only when used

    def rows() -> object:
        yield from query_batches(config, report, connector_id)

    return dlt.resource(rows, name=table_name)


def query_table_rows(
    config: SqlDatabaseSourceConfig, workdir: Path, table_name: str, columns: list[ResultColumn],
    report: QueryReport, connector_id: int | None = None,
) -> DltResource:
    """A dlt resource yielding the query's rows into ``table_name`` with the source's exact column types.

    PostgreSQL writes the rows in its own text format under settings that read back exactly
    (`export.EXACT_TEXT`), streamed (`export.copy_stream`) into the destination's COPY while they are
    produced: every type's own text, so every value arrives equal, as `psql -c "\\copy (q) to stdout" |
    psql -c "\\copy t from stdin"` does, with no intermediate file. dlt gets a placeholder load file
    (the header line) that stands for the stream (`cai_common.streams`); the columns carry their exact
    types as `x-postgres-type` hints, so load info, state and schema are dlt's as for any load.
    """

    def rows() -> object:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{uuid.uuid4().hex}.csv"
        path.write_text(",".join(f'"{c.name}"' for c in columns) + "\n", encoding="utf-8")
        streams.register(path, lambda: copy_stream(config, report, connector_id), EXACT_FORMAT)
        report.stream_files.append(str(path))
        hints = dlt.mark.make_hints(table_name=table_name,
                                    columns=[dlt_column(c.name, c.pg_type) for c in columns])  # type: ignore[misc]
        yield dlt.mark.with_file_import(str(path), "csv", 0, hints=hints)

    return dlt.resource(rows, name=table_name)
