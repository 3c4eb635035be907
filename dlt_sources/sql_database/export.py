"""A query's result as a CSV file, formatted by PostgreSQL itself (`COPY (query) TO STDOUT`).

PostgreSQL writing CSV is the physical limit for this job (psql's `\\copy ... to` does the same), and
gives exactly psql's output: header row, RFC 4180 quoting, NULL as an empty field, timestamps with
their offset. The bytes are streamed to a local file in bounded chunks inside a READ ONLY transaction.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cai_common import ConnectorConfigError
from cai_common.errors import disk_full_named
from dlt_destinations.writer import UnsafePathError, safe_join
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.guard import ensure_read_only_query, statement_text
from dlt_sources.sql_database.login import LOGIN_POWERS, superuser_check
from dlt_sources.sql_database.reports import QueryError, QueryReport

# Read and write buffer of the export: 1 MB moves at disk speed with memory kept flat.
COPY_BUFFER = 1024 * 1024


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


# Session settings under which every type's text reads back as the same value in any PostgreSQL:
# ISO dates, `postgres` intervals, hex bytea, floats with all their digits (a role may have set
# extra_float_digits lower, which rounds), timestamps in UTC.
EXACT_TEXT = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "bytea_output": "hex",
              "extra_float_digits": "3", "TimeZone": "UTC", "client_encoding": "UTF8"}


def export_csv(
    config: SqlDatabaseSourceConfig, path: Path, report: QueryReport, connector_id: int | None = None,
    header: list[str] | None = None,
) -> int:
    """Write the query's rows as CSV (with header) to ``path``; returns the bytes written.

    psycopg2's `copy_expert` (the driver dlt's postgres destination already uses) streams COPY's
    output to the file from C: measured on 2M rows it takes what psql takes (2.4 s vs 2.5 s), where a
    Python loop over psycopg 3's COPY rows took 4.1-4.9 s.

    Args:
        config: the source.
        path: the local file to write.
        report: gets the reader and the rows PostgreSQL reported copying.
        connector_id: named in errors.
        header: column names to write as the header line instead of PostgreSQL's, and the values
            written under EXACT_TEXT settings: the file is for loading into PostgreSQL, not for people
            (without it the file is byte for byte what psql's `\\copy (query) to ... csv header` writes).
    """
    import psycopg2

    ensure_read_only_query(config.query, connector_id)
    # The query runs as given (it was proven a single read statement), without the trailing `;` and
    # comments that cannot sit inside COPY ( ).
    query = statement_text(config.query)
    statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv{'' if header else ', HEADER'})"
    report.reader = "copy"
    try:
        conn = psycopg2.connect(config.dsn(), connect_timeout=30)
        try:
            conn.set_session(readonly=True)
            with disk_full_named(path), conn.cursor() as cursor, open(path, "wb", buffering=COPY_BUFFER) as out:
                cursor.execute(LOGIN_POWERS)
                superuser_check(cursor.fetchone(), config, connector_id)
                if header:
                    for name, value in EXACT_TEXT.items():
                        cursor.execute("SELECT set_config(%s, %s, true)", (name, value))
                    out.write((",".join(header) + "\n").encode())
                cursor.copy_expert(statement, out, size=COPY_BUFFER)
                report.rows = max(cursor.rowcount, 0)
            conn.rollback()
        finally:
            conn.close()
    except psycopg2.Error as exc:
        path.unlink(missing_ok=True)
        raise QueryError(connector_id, f"source query failed: {str(exc).strip().splitlines()[0]}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    report.batches = 1
    return path.stat().st_size


class _PipeReader:
    """The read end of the pipe a COPY TO thread writes into; at the end, the thread's failure is raised."""

    def __init__(self, fd: int, thread: threading.Thread, failure: list[BaseException]) -> None:
        self.fd, self.thread, self.failure = fd, thread, failure

    def read(self, size: int = COPY_BUFFER) -> bytes:
        data = os.read(self.fd, size)
        if not data:  # end of the stream: complete only if the COPY TO ended well
            self.thread.join()
            if self.failure:
                raise self.failure[0]
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@contextlib.contextmanager
def csv_stream(
    config: SqlDatabaseSourceConfig, report: QueryReport, connector_id: int | None = None,
) -> Iterator[_PipeReader]:
    """The query's rows as CSV without a header, under EXACT_TEXT settings, read as they are produced.

    A thread runs `COPY (query) TO STDOUT` (psycopg2's `copy_expert`, C all the way) into a pipe; the
    caller reads the other end, e.g. as the input of a `COPY ... FROM STDIN` into another database: the
    two COPYs run at once, as `psql ... | psql ...` does, with memory bounded by the pipe. When the
    query fails part-way, the reader raises its QueryError at the end instead of returning EOF, so the
    consumer's COPY fails and rolls back rather than committing part of the rows. Leaving the block
    early closes the pipe, and the thread ends.
    """
    import fcntl

    import psycopg2

    ensure_read_only_query(config.query, connector_id)
    statement = f"COPY ({statement_text(config.query)}) TO STDOUT WITH (FORMAT csv)"
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # a 1 MB pipe: fewer wake-ups than the default 64 KB
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, COPY_BUFFER)
    failure: list[BaseException] = []
    report.reader = "copy stream"

    def produce() -> None:
        try:
            with open(write_fd, "wb", buffering=COPY_BUFFER) as out:
                conn = psycopg2.connect(config.dsn(), connect_timeout=30)
                try:
                    conn.set_session(readonly=True)
                    with conn.cursor() as cursor:
                        cursor.execute(LOGIN_POWERS)
                        superuser_check(cursor.fetchone(), config, connector_id)
                        for name, value in EXACT_TEXT.items():
                            cursor.execute("SELECT set_config(%s, %s, true)", (name, value))
                        cursor.copy_expert(statement, out, size=COPY_BUFFER)
                        report.rows = max(cursor.rowcount, 0)
                    conn.rollback()
                finally:
                    conn.close()
        except psycopg2.Error as exc:
            failure.append(QueryError(connector_id, f"source query failed: {str(exc).strip().splitlines()[0]}"))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=produce, name="cai-copy-out", daemon=True)
    thread.start()
    reader = _PipeReader(read_fd, thread, failure)
    try:
        yield reader
    finally:
        reader.close()  # a producer still writing gets EPIPE and ends
        thread.join(60)
    report.batches = 1
