"""PostgreSQL query source: a read-only SELECT streamed as Arrow batches (connectorx, psycopg fallback).

The config loads at once; the readers (connectorx, pyarrow, sqlglot) load on first use, so paths
that never run a query never pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_common.lazy import lazy_exports
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig

if TYPE_CHECKING:
    from dlt_sources.sql_database.export import csv_file_name, export_csv
    from dlt_sources.sql_database.guard import ensure_read_only_query
    from dlt_sources.sql_database.readers import QueryError, QueryReport, query_batches
    from dlt_sources.sql_database.resources import query_csv_file, query_rows

__getattr__ = lazy_exports(__name__, {
    "csv_file_name": "export", "export_csv": "export", "ensure_read_only_query": "guard",
    "QueryError": "readers", "QueryReport": "readers", "query_batches": "readers",
    "query_csv_file": "resources", "query_rows": "resources",
})


__all__ = [
    "QueryError",
    "QueryReport",
    "SqlDatabaseSourceConfig",
    "csv_file_name",
    "export_csv",
    "ensure_read_only_query",
    "query_batches",
    "query_csv_file",
    "query_rows",
]
