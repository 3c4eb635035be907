"""The exact column types of a query's result, from PostgreSQL's own description of it.

The query is prepared, never executed: libpq's Describe returns each result column's type OID and
modifier, and `format_type` names them as PostgreSQL does (`numeric(10,3)`, `character varying(40)`,
`timestamp without time zone`, `integer[]`). A built-in type (or an array or range of one) exists in
every PostgreSQL database and is kept exactly; a domain, an enum, a composite or an extension's
type (PostGIS, citext, hstore) may not exist in the destination, so it lands as text, and the run
says which columns did.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import pq

from cai_common.naming import column_names
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.login import LOGIN_POWERS, superuser_check
from dlt_sources.sql_database.reports import QueryError

_TYPES = """
SELECT format_type(m.oid, m.mod) AS pg_type,
       n.nspname = 'pg_catalog' AND t.typtype IN ('b', 'r', 'm') AND t.typname <> 'unknown'
       AND (t.typcategory <> 'A' OR (en.nspname = 'pg_catalog' AND et.typtype IN ('b', 'r', 'm'))) AS exact
FROM unnest(%s::oid[], %s::int4[]) WITH ORDINALITY AS m(oid, mod, i)
JOIN pg_type t ON t.oid = m.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type et ON t.typcategory = 'A' AND et.oid = t.typelem
LEFT JOIN pg_namespace en ON en.oid = et.typnamespace
ORDER BY m.i
"""


@dataclass(frozen=True)
class ResultColumn:
    """One column of a query's result."""

    name: str
    """dlt's name for it (snake_case, unique)."""
    source_type: str
    """Its type as the source database names it."""
    exact: bool
    """False when it lands as text (a domain, an enum, an extension's type)."""

    @property
    def pg_type(self) -> str:
        """The column's type in the destination."""
        return self.source_type if self.exact else "text"


def describe_query(config: SqlDatabaseSourceConfig, connector_id: int | None = None) -> list[ResultColumn]:
    """The query's result columns, from a prepared (never executed) statement in a READ ONLY session.

    Raises:
        QueryError: the database cannot prepare the query (a syntax error, a missing table...).
    """
    try:
        with psycopg.connect(config.dsn(), connect_timeout=30) as conn:
            conn.read_only = True
            superuser_check(conn.execute(LOGIN_POWERS).fetchone(), config, connector_id)
            prepared = conn.pgconn.prepare(b"", config.query.encode())
            if prepared.status != pq.ExecStatus.COMMAND_OK:
                raise QueryError(connector_id, f"source query failed: {_message(prepared)}")
            described = conn.pgconn.describe_prepared(b"")
            if described.status != pq.ExecStatus.COMMAND_OK:
                raise QueryError(connector_id, f"source query failed: {_message(described)}")
            fields = [((described.fname(i) or b"").decode(), described.ftype(i), described.fmod(i))
                      for i in range(described.nfields)]
            rows = conn.execute(_TYPES, ([f[1] for f in fields], [f[2] for f in fields])).fetchall()
    except psycopg.Error as exc:
        raise QueryError(connector_id, f"source query failed: {str(exc).strip().splitlines()[0]}") from exc
    names = column_names([f[0] for f in fields], len(fields))
    return [ResultColumn(name, pg_type, bool(exact)) for name, (pg_type, exact) in zip(names, rows, strict=True)]


def _message(result: pq.abc.PGresult) -> str:
    return (result.error_message or b"").decode(errors="replace").strip().splitlines()[0]


__all__ = ["ResultColumn", "describe_query"]
