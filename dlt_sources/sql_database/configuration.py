"""Typed config of a PostgreSQL query source (spec 5.1)."""

from __future__ import annotations

from pydantic import Field

from cai_common import PostgresCredentials


class SqlDatabaseSourceConfig(PostgresCredentials):
    """A read-only SELECT against a PostgreSQL database, exported in batches."""

    query: str = Field(..., min_length=1, description="a single SELECT (or WITH ... SELECT) statement")
    csv_filename: str | None = Field(
        None, description="output file name; placeholders {connector_id}, {date}, {timestamp}"
    )
    batch_size: int = Field(10_000, gt=0, description="rows per batch read from the server")
    use_server_side_cursor: bool = Field(True, description="stream rows through a server-side cursor")
    chunk_size_mb: int = Field(5, ge=5, le=5120, description="multipart part size in MB (S3 minimum is 5)")
    allow_superuser: bool = Field(
        False, description="run the query even though the login is a superuser (use a read-only role instead)"
    )
