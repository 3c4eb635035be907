"""The `sql_database` source kind: a read-only SELECT on PostgreSQL."""

from __future__ import annotations

from cai_common.kinds import Caution, Probe, SourceKind
from cai_common.probes import server_version
from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig


def _login(dsn: str) -> str:
    """The server answers; a login that could write is a warning (queries should run as a read-only role)."""
    import psycopg

    from dlt_sources.sql_database.login import LOGIN_POWERS, write_powers

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        server = server_version(conn)
        powers = write_powers(conn.execute(LOGIN_POWERS).fetchone())
    if powers:
        return Caution(f"{server}; {powers}: a query's functions could write through it, use a read-only role "
                       "(README: Queries only read)")
    return f"{server}; the login can only read"


def probe(config: SqlDatabaseSourceConfig) -> Probe:
    """The server accepts the login; a login that can write is a warning."""
    return Probe(config.dsn(dummy_password=True), lambda: _login(config.dsn()))


KIND = SourceKind(code="sql_database", config=SqlDatabaseSourceConfig, yields="query",
                  description="PostgreSQL SELECT query", aliases=("postgres", "database"), probe=probe)
