"""A query's result as Arrow record batches: connectorx streams them; a psycopg cursor is the fallback.

Both run read-only: connectorx's session gets `default_transaction_read_only=on` through the libpq
`options` parameter, the psycopg fallback opens a READ ONLY transaction. Nothing holds the whole
result: connectorx yields `batch_size`-row batches from a stream, the fallback fetches `batch_size`
rows at a time from a server-side cursor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import connectorx as cx
import psycopg
import pyarrow as pa
from psycopg.types.string import TextLoader

from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.guard import ensure_read_only_query
from dlt_sources.sql_database.reports import QueryError, QueryReport

logger = logging.getLogger(__name__)

READ_ONLY = "-c default_transaction_read_only=on"

# PostgreSQL type OID -> Arrow type for the fallback reader. numeric matches connectorx
# (decimal128(38, 10)), so a table keeps its types whichever reader filled it.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 700: pa.float32(), 701: pa.float64(),
    1700: pa.decimal128(38, 10), 1082: pa.date32(), 1083: pa.time64("us"), 1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
# Read as PostgreSQL's own text, as connectorx does: JSON stays the JSON text, uuids and intervals
# their canonical text.
_AS_TEXT = ("json", "jsonb", "uuid", "interval")


def _read_only_url(dsn: str) -> str:
    """The DSN with a read-only session option added to any options it already has."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query['options']} {READ_ONLY}" if query.get("options") else READ_ONLY
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _wants_tls(dsn: str) -> bool:
    """Whether the DSN (or libpq's environment) asks for TLS beyond libpq's default `prefer`."""
    import os

    query = dict(parse_qsl(urlsplit(dsn).query))
    mode = query.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"
    files = any(query.get(k) or os.environ.get(f"PG{k.upper()}") for k in ("sslrootcert", "sslcert", "sslkey"))
    return mode not in ("disable", "allow", "prefer") or files


def query_batches(
    config: SqlDatabaseSourceConfig, report: QueryReport, connector_id: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield the query's rows as Arrow record batches, proving first that it only reads.

    Raises:
        ConnectorConfigError: the query is not a single read statement (nothing was sent).
        QueryError: PostgreSQL failed the query.
    """
    ensure_read_only_query(config.query, connector_id)
    if _wants_tls(config.dsn()):
        # connectorx neither verifies a server against `sslrootcert` nor presents client certificates
        # the way libpq does: TLS goes through libpq (psycopg), never a weaker handshake.
        report.reader, report.fallback_reason = "psycopg", "TLS settings: libpq verifies the server"
        yield from _cursor_batches(config, report, connector_id)
        return
    try:
        reader = cx.read_sql(_read_only_url(config.dsn()), config.query, return_type="arrow_stream",
                             batch_size=config.batch_size)
        batches = iter(reader)
        first = next(batches, None)
    except BaseException as exc:  # connectorx reports unsupported types as a Rust panic (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reason = _postgres_message(str(exc))
        if "read-only transaction" in reason:
            raise QueryError(connector_id, f"source query tried to write: {reason}") from None
        report.reader, report.fallback_reason = "psycopg", reason
        logger.info("connectorx cannot serve the query (%s); reading with a server-side cursor", reason)
        yield from _cursor_batches(config, report, connector_id)
        return
    for batch in [first] if first is not None else []:
        yield _counted(batch, report)
    for batch in batches:
        yield _counted(batch, report)


def _counted(batch: pa.RecordBatch, report: QueryReport) -> pa.RecordBatch:
    report.batches += 1
    report.rows += batch.num_rows
    return batch


def _cursor_batches(
    config: SqlDatabaseSourceConfig, report: QueryReport, connector_id: int | None
) -> Iterator[pa.RecordBatch]:
    """The fallback: a named (server-side) cursor in a READ ONLY transaction, `batch_size` rows a fetch."""
    try:
        with psycopg.connect(config.dsn(), connect_timeout=30) as conn:
            conn.read_only = True
            for name in _AS_TEXT:
                conn.adapters.register_loader(name, TextLoader)
            cursor_name = "cai_export" if config.use_server_side_cursor else None
            with conn.cursor(name=cursor_name) if cursor_name else conn.cursor() as cursor:
                cursor.execute(config.query)
                assert cursor.description is not None
                names = [column.name for column in cursor.description]
                types = [_ARROW_TYPES.get(column.type_code) for column in cursor.description]
                schema: pa.Schema | None = None
                while rows := cursor.fetchmany(config.batch_size):
                    columns = [list(values) for values in zip(*rows, strict=True)]
                    arrays = [pa.array(values, type=kind) for values, kind in zip(columns, types, strict=True)]
                    batch = pa.RecordBatch.from_arrays(arrays, names=names)
                    schema = schema or _settled(batch.schema)
                    yield _counted(batch.cast(schema) if batch.schema != schema else batch, report)
    except psycopg.Error as exc:
        raise QueryError(connector_id, f"source query failed: {_first_line(exc)}") from exc


def _settled(schema: pa.Schema) -> pa.Schema:
    """A column that was all NULL in the first batch has no type yet: make it text."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema])


def _postgres_message(text: str) -> str:
    """PostgreSQL's own message out of connectorx's Rust error dump, else its first line."""
    found = re.search(r'message: "((?:[^"\\]|\\.)*)"', text)
    return found[1].replace('\\"', '"') if found else text.strip().split("\n", 1)[0][:300]


def _first_line(exc: Any) -> str:
    return str(exc).strip().split("\n", 1)[0]
