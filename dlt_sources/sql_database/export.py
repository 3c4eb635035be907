"""A query's result as a CSV file, formatted by PostgreSQL itself (`COPY (query) TO STDOUT`).

PostgreSQL writing CSV is the physical limit for this job (psql's `\\copy ... to` does the same), and
gives exactly psql's output: header row, RFC 4180 quoting, NULL as an empty field, timestamps with
their offset. The bytes are streamed to a local file in bounded chunks inside a READ ONLY transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cai_common import ConnectorConfigError, progress
from cai_common.disk import Flusher
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
# The COPY format rows travel in from one PostgreSQL to another. Measured piping 2M rows of 11 columns
# between two psql processes on one 2-core machine: text 3.7-3.9 s, CSV 4.4-4.5 s. Text escapes what
# it must (backslash, tab, newline, `\N` for NULL), so every value arrives as it left.
EXACT_FORMAT: Literal["text"] = "text"


def export_csv(
    config: SqlDatabaseSourceConfig, path: Path, report: QueryReport, connector_id: int | None = None,
) -> tuple[int, str]:
    """Write the query's rows as CSV with a header to ``path``: byte for byte what psql's `\\copy
    (query) to ... csv header` writes. Returns (bytes written, their SHA-256).

    PostgreSQL's COPY runs on a thread (`copy_stream`, C all the way); this thread hashes and writes
    what arrives, so the file is never read back to be hashed, and reports each piece as progress.
    """
    digest = hashlib.sha256()
    size = 0
    flusher = None
    try:
        with (disk_full_named(path), copy_stream(config, report, connector_id, exact=False) as rows,
              open(path, "wb", buffering=0) as out):
            # On a folder destination this file becomes the delivered one (a hard link), fsynced
            # before it gets its name: it goes to the disk while PostgreSQL writes it.
            flusher = Flusher(path)
            while chunk := rows.read(COPY_BUFFER):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                flusher.written(size)
                progress.advance(len(chunk))  # the run's bar on a terminal, its progress lines in a log
            flusher.finish()
    except BaseException:
        if flusher is not None:
            flusher.stop()
        path.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


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
def copy_stream(
    config: SqlDatabaseSourceConfig, report: QueryReport, connector_id: int | None = None, exact: bool = True,
) -> Iterator[_PipeReader]:
    """The query's rows as COPY writes them, read as they are produced.

    ``exact``: for loading into PostgreSQL: PostgreSQL's own text format (`EXACT_FORMAT`: what pg_dump
    and psql's `\\copy ... to stdout` use, which both servers read and write faster than CSV), no
    header, under EXACT_TEXT settings. Otherwise CSV with PostgreSQL's header and the session's own
    settings: what psql's `\\copy (query) to ... csv header` writes, for people.

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
    options = f"FORMAT {EXACT_FORMAT}" if exact else "FORMAT csv, HEADER"
    statement = f"COPY ({statement_text(config.query)}) TO STDOUT WITH ({options})"
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # a 1 MB pipe: fewer wake-ups than the default 64 KB
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, COPY_BUFFER)
    failure: list[BaseException] = []
    report.reader = "copy stream" if exact else "copy"
    report.streams_opened += 1

    def produce() -> None:
        try:
            with open(write_fd, "wb", buffering=COPY_BUFFER) as out:
                conn = psycopg2.connect(config.dsn(), connect_timeout=30)
                try:
                    conn.set_session(readonly=True)
                    with conn.cursor() as cursor:
                        cursor.execute(LOGIN_POWERS)
                        superuser_check(cursor.fetchone(), config, connector_id)
                        for name, value in (EXACT_TEXT if exact else {}).items():
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
