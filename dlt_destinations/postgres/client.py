"""dlt's postgres client, with one change: a COPY that PostgreSQL rejects for its data fails at once.

dlt's CSV COPY job runs `copy_expert` on the raw psycopg2 connection, so a `DataError` ("invalid
input syntax for type bigint") reaches dlt's job runner untranslated and is retried as if transient
(5 times, then the package is left pending). Bad data never gets better by retrying.
"""

from __future__ import annotations

from typing import Any

import psycopg2
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.destinations.impl.postgres.factory import postgres as dlt_postgres
from dlt.destinations.impl.postgres.postgres import PostgresClient, PostgresCsvCopyJob


class TerminalCsvCopyJob(PostgresCsvCopyJob):
    """dlt's CSV COPY job; data and constraint errors are terminal, connection errors stay transient."""

    def run(self) -> None:
        try:
            super().run()
        except (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.ProgrammingError) as exc:
            raise DestinationTerminalException(f"{type(exc).__name__}: {exc}") from exc


class CaiPostgresClient(PostgresClient):
    """dlt's postgres job client, using TerminalCsvCopyJob for CSV load files."""

    def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False) -> Any:
        job = super().create_load_job(table, file_path, load_id, restore)
        if type(job) is PostgresCsvCopyJob:
            job = TerminalCsvCopyJob(file_path)
        return job


class postgres(dlt_postgres):  # noqa: N801 - dlt names destination factories in lower case
    """dlt's postgres destination factory with CaiPostgresClient."""

    @property
    def client_class(self) -> type[PostgresClient]:
        return CaiPostgresClient
