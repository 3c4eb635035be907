"""A query's result as a CSV file, formatted by PostgreSQL itself (`COPY (query) TO STDOUT`).

PostgreSQL writing CSV is the physical limit for this job (psql's `\\copy ... to` does the same), and
gives exactly psql's output: header row, RFC 4180 quoting, NULL as an empty field, timestamps with
their offset. The bytes are streamed to a local file in bounded chunks inside a READ ONLY transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from cai_common import ConnectorConfigError
from cai_common.files import UnsafePathError, safe_join
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.guard import ensure_read_only_query
from dlt_sources.sql_database.readers import QueryError, QueryReport


def csv_file_name(config: SqlDatabaseSourceConfig, connector_id: int | None, now: datetime | None = None) -> str:
    """The export's file name: `csv_filename` with {connector_id}, {date} and {timestamp} filled in."""
    now = now or datetime.now(UTC)
    template = config.csv_filename or "connector_{connector_id}_{timestamp}.csv"
    values = {"connector_id": connector_id, "date": now.strftime("%Y%m%d"),
              "timestamp": now.strftime("%Y%m%dT%H%M%SZ")}
    try:
        name = template.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        problem = f"may use only {{connector_id}}, {{date}} and {{timestamp}}, got `{template}`"
        raise ConnectorConfigError(connector_id, "source", "csv_filename", problem) from exc
    try:
        safe_join("destination", name)
    except UnsafePathError:
        raise ConnectorConfigError(connector_id, "source", "csv_filename",
                                   f"must be a relative path inside the destination, got `{name}`") from None
    return name


def export_csv(
    config: SqlDatabaseSourceConfig, path: Path, report: QueryReport, connector_id: int | None = None
) -> int:
    """Write the query's rows as CSV (with header) to ``path``; returns the bytes written."""
    ensure_read_only_query(config.query, connector_id)
    # The query runs as given (it was proven a single read statement); a trailing `;` cannot sit in COPY ( ).
    query = config.query.strip().rstrip(";")
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(sql.SQL(query))
    size = 0
    report.reader = "copy"
    try:
        with psycopg.connect(config.dsn(), connect_timeout=30) as conn:
            conn.read_only = True
            with conn.cursor() as cursor:
                with cursor.copy(statement) as copy, open(path, "wb") as out:
                    for chunk in copy:
                        out.write(chunk)
                        size += len(chunk)
                report.rows = max(cursor.rowcount, 0)
    except psycopg.Error as exc:
        path.unlink(missing_ok=True)
        raise QueryError(connector_id, f"source query failed: {str(exc).strip().splitlines()[0]}") from exc
    report.batches = 1
    return size
