"""The fidelity corpus: a PostgreSQL table holding every case real clinical data brings, and its exports.

The table is made by PostgreSQL from SQL literals (PostgreSQL's own types, values and NULLs), and its
CSV files are written by the real tools: psql's `\\copy ... to ... csv header` (under a +05:30 time
zone, so timestamps carry offsets, and 1900's Madras time +05:21:10), and Python's csv module in
Excel's dialect (CRLF line ends, a UTF-8 BOM). Results are compared with the source in SQL.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import psycopg

# Column -> PostgreSQL type of the corpus table.
COLUMNS: dict[str, str] = {
    "id": "integer",
    "mrn": "text",                       # leading zeros: an identifier, not a number
    "zip": "character varying(10)",
    "small": "smallint",
    "regular": "integer",
    "big": "bigint",
    "beyond_bigint": "numeric",          # an integer too large for bigint
    "amount": "numeric(20,6)",           # more than 15 significant digits
    "exact": "numeric",                  # unconstrained: more than 10 decimals
    "wide": "numeric(38,18)",
    "flag": "boolean",
    "born": "date",
    "seen_time": "time without time zone",
    "admitted": "timestamp without time zone",
    "event_at": "timestamp with time zone",
    "note": "text",                      # quotes, commas, newlines, CRLF inside, unicode, '' vs NULL
    "name": "character varying(40)",
    "ref": "uuid",
    "payload": "jsonb",
    "blob": "bytea",
    "tags": "text[]",
    "scores": "integer[]",
    "stay": "interval",
    "ratio": "double precision",
}

# One row per case; NULL rows and '' rows on purpose. SQL literals, so PostgreSQL makes the values.
ROWS: list[str] = [
    "(1, '08123', '02139', 1, 1, 1, 12345678901234567890123, 12345678901234.123456, "
    "3.14159265358979323846264338327950288419716939937510, 12345678901234567890.123456789012345678, true, "
    "'1900-01-01', '08:15:42.123456', '1969-07-20 20:17:40.5', '2024-03-01 08:15:42.123456+00', "
    "'plain', 'José Müller', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    "'{\"n\": 12345678901234567890.12345678901234567890, \"s\": \"x\"}', '\\x00ff10', "
    "'{\"a,b\",\"q\\\"x\",NULL,\"\"}', '{1,NULL,3}', '1 year 2 mons 3 days 04:05:06.789', 0.1)",
    "(2, '00123', '00501', -32768, -2147483648, -9223372036854775808, -99999999999999999999999, "
    "-0.000001, -0.000000000000000000000000000001, -0.000000000000000001, false, "
    "'1969-12-31', '00:00:00', '2099-12-31 23:59:59.999999', '1969-07-20 20:17:40.000001+00', "
    "'says \"hello\", then leaves', 'O''Brien', '00000000-0000-0000-0000-000000000000', '[]', '\\x', "
    "'{}', '{}', '-1 days', -1.5e-30)",
    "(3, '0', '99999-1234', 32767, 2147483647, 9223372036854775807, 0, 0, 0, 0, NULL, "
    "'2040-02-29', '23:59:59.999999', '1900-01-01 00:00:00', '1900-01-01 00:00:00+00', "
    "E'line one\\nline two\\r\\nline three', '李小龙 🎉', NULL, 'null', NULL, NULL, NULL, '00:00:00', "
    "1.7976931348623157e308)",
    "(4, '', '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', '', NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL)",
    "(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL)",
    "(6, '000000042', '10001', 0, 0, 0, 1, 1.5, 100, 1, true, '9999-12-31', '12:00:00', "
    "'2038-01-19 03:14:08', '2262-04-12 00:00:00.5-08:00', 'Zoë, Jr. ,\"quoted\",', 'Ångström', "
    "'ffffffff-ffff-ffff-ffff-ffffffffffff', '{\"deep\": {\"list\": [1, 2.50, \"x\"]}}', '\\xdeadbeef', "
    "'{plain}', '{-1}', '36 hours', 'NaN')",
]
"""Row literals for the corpus table, in COLUMNS order."""

# What CSV inference makes of each corpus column (the README's type table says the same).
CSV_TYPES: dict[str, str] = {
    "id": "bigint", "mrn": "text", "zip": "text", "small": "bigint", "regular": "bigint", "big": "bigint",
    "beyond_bigint": "numeric", "amount": "numeric", "exact": "numeric", "wide": "numeric", "flag": "boolean",
    "born": "date", "seen_time": "time without time zone", "admitted": "timestamp without time zone",
    "event_at": "timestamp with time zone", "note": "text", "name": "text", "ref": "text", "payload": "text",
    "blob": "text", "tags": "text", "scores": "text", "stay": "text", "ratio": "numeric",
}


def create_corpus(url: str, schema: str, table: str = "fidelity") -> None:
    """Create ``schema.table`` holding the corpus rows."""
    columns = ", ".join(f"{name} {pg_type}" for name, pg_type in COLUMNS.items())
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"CREATE TABLE {schema}.{table} ({columns})")
        conn.execute(f"INSERT INTO {schema}.{table} VALUES " + ", ".join(ROWS))


def psql() -> str:
    """The psql client; CI's machine has it (the PostgreSQL server's package)."""
    found = shutil.which("psql")
    assert found, "psql is needed to write the corpus the way real exports are written"
    return found


def psql_copy_out(url: str, query: str, path: Path, timezone: str | None = "Asia/Kolkata") -> bytes:
    """Run psql's own `\\copy (query) to 'path' csv header` (in ``timezone``, or the server's when None);
    return the file's bytes."""
    env = {**os.environ, **({"PGTZ": timezone} if timezone else {})}
    command = f"\\copy ({query}) to '{path}' csv header"
    subprocess.run([psql(), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], env=env, check=True,
                   capture_output=True, timeout=60)
    return path.read_bytes()


def excel_csv(url: str, query: str, path: Path) -> None:
    """The query's rows as Excel writes CSV: Python's csv module in the `excel` dialect (CRLF line ends,
    minimal quoting), UTF-8 with a BOM. Excel writes NULL and '' alike (an empty field): keep rows with
    empty strings out of ``query``."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")
        cursor = conn.execute(f"SELECT * FROM ({query}) q LIMIT 0")
        names = [c.name for c in cursor.description or []]
        rows = conn.execute(f"SELECT {', '.join(f'{n}::text' for n in names)} FROM ({query}) q").fetchall()
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f, dialect="excel")
        writer.writerow(names)
        writer.writerows(rows)


def mismatches(url: str, loaded: str, source: str, columns: list[str], as_text: set[str] = frozenset()) -> list:
    """Rows where any column differs between ``loaded`` and ``source`` (joined on id), compared in SQL.

    Columns in ``as_text`` landed as text: they are compared with the source value's text.
    """
    def cmp(c: str) -> str:
        if c in as_text:
            return f"l.{c} IS DISTINCT FROM s.{c}::text"
        return f"l.{c} IS DISTINCT FROM s.{c}"

    query = (f"SELECT s.id, {', '.join(f'({cmp(c)}) AS {c}' for c in columns)} FROM {source} s "
             f"FULL JOIN {loaded} l ON l.id = s.id")
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")  # the zone the CSV's text was written in
        rows = conn.execute(query).fetchall()
    bad = []
    for row in rows:
        differing = [c for c, different in zip(columns, row[1:], strict=True) if different]
        if differing or row[0] is None:
            bad.append((row[0], differing))
    return bad


def column_types(url: str, schema: str, table: str) -> dict[str, str]:
    """Column -> format_type of a table, in column order."""
    query = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
             "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
    with psycopg.connect(url) as conn:
        return dict(conn.execute(query, (f"{schema}.{table}",)).fetchall())  # type: ignore[arg-type]
