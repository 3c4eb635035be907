"""PostgreSQL query source: a read-only SELECT streamed as Arrow batches (connectorx, psycopg fallback)."""

from __future__ import annotations

import dlt
from dlt.extract.resource import DltResource

from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.guard import ensure_read_only_query
from dlt_sources.sql_database.readers import QueryError, QueryReport, query_batches


def query_rows(
    config: SqlDatabaseSourceConfig, table_name: str, report: QueryReport, connector_id: int | None = None
) -> DltResource:
    """A dlt resource yielding the query's rows as Arrow batches into ``table_name``."""

    def rows() -> object:
        yield from query_batches(config, report, connector_id)

    return dlt.resource(rows, name=table_name)


__all__ = [
    "QueryError",
    "QueryReport",
    "SqlDatabaseSourceConfig",
    "ensure_read_only_query",
    "query_batches",
    "query_rows",
]
