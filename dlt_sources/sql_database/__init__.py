"""PostgreSQL query source: a read-only SELECT streamed as Arrow batches (connectorx, psycopg fallback).

The config loads at once; the readers (connectorx, pyarrow, sqlglot) load on first use, so paths
that never run a query never pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_common.lazy import lazy_exports
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.kind import KIND

if TYPE_CHECKING:
    from dlt_sources.sql_database.columns import ResultColumn, describe_query
    from dlt_sources.sql_database.export import csv_file_name, export_csv
    from dlt_sources.sql_database.guard import ensure_read_only_query
    from dlt_sources.sql_database.readers import query_batches
    from dlt_sources.sql_database.reports import QueryError, QueryReport
    from dlt_sources.sql_database.resources import query_csv_file, query_rows, query_table_rows

__getattr__ = lazy_exports(__name__, {
    "csv_file_name": "export", "export_csv": "export", "ensure_read_only_query": "guard",
    "QueryError": "reports", "QueryReport": "reports", "query_batches": "readers",
    "query_csv_file": "resources", "query_rows": "resources", "query_table_rows": "resources",
    "ResultColumn": "columns", "describe_query": "columns",
})


__all__ = [
    "KIND", "QueryError", "QueryReport", "ResultColumn", "SqlDatabaseSourceConfig", "csv_file_name",
    "describe_query", "export_csv", "ensure_read_only_query", "query_batches", "query_csv_file", "query_rows",
    "query_table_rows",
]
