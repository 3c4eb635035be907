"""dlt resources for every source type, and the registry that maps a type code to its config model."""

from cai_common.registry import TypeRegistry
from dlt_sources.filesystem import FilesystemSourceConfig, S3SourceConfig
from dlt_sources.sql_database import SqlDatabaseSourceConfig

SOURCES = TypeRegistry(
    side="source",
    configs={
        "sql_database": SqlDatabaseSourceConfig,
        "filesystem": FilesystemSourceConfig,
        "s3": S3SourceConfig,
    },
    aliases={"postgres": "sql_database", "database": "sql_database", "minio": "s3"},
)
"""Source type code (and its aliases) -> typed config model."""

__all__ = ["SOURCES"]
