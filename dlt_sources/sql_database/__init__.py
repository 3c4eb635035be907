"""PostgreSQL query source (config only so far: the export path arrives with the query-source issue)."""

from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig

__all__ = ["SqlDatabaseSourceConfig"]
