"""A Prefect server whose database is PostgreSQL: the production set-up, and `cai server` for local use.

Prefect's default database is SQLite, whose single writer refuses concurrent writes ("database is
locked"): under a burst of triggers the API answers 503 and a flow run can crash before its flow
begins. On PostgreSQL the same burst is served. By default the server's database is `prefect` on the
config store's own PostgreSQL server (created if missing); any other libpq URL can be given.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

PREFECT_DATABASE = "prefect"


def sqlalchemy_url(libpq_url: str, database: str | None = None) -> str:
    """The `postgresql+asyncpg://` URL Prefect takes for a libpq URL (TLS goes in `tls_environment`)."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(libpq_url)
    user = quote(str(parts.get("user") or "postgres"), safe="")
    password = parts.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@"
    host = str(parts.get("host") or "localhost")
    port = parts.get("port") or 5432
    name = quote(database or str(parts.get("dbname") or PREFECT_DATABASE), safe="")
    query: dict[str, str] = {}
    if host.startswith("/"):  # a unix socket directory: asyncpg takes it as `host`
        query["host"] = host
        host = ""
    netloc = f"{host}:{port}" if host else ""
    return f"postgresql+asyncpg://{auth}{netloc}/{name}" + (f"?{urlencode(query)}" if query else "")


def tls_environment(libpq_url: str) -> dict[str, str]:
    """Prefect's database TLS settings for the libpq URL's `sslmode`/`sslrootcert`/`sslcert`/`sslkey`."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(libpq_url)
    mode = str(parts.get("sslmode") or "")
    if mode not in ("require", "verify-ca", "verify-full"):
        return {}
    prefix = "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_"
    env = {f"{prefix}ENABLED": "true", f"{prefix}CHECK_HOSTNAME": "true" if mode == "verify-full" else "false"}
    for key, name in (("sslrootcert", "CA_FILE"), ("sslcert", "CERT_FILE"), ("sslkey", "KEY_FILE")):
        if parts.get(key):
            env[prefix + name] = str(parts[key])
    return env


def ensure_database(server_url: str, database: str = PREFECT_DATABASE) -> bool:
    """Create ``database`` on the server of ``server_url`` unless it exists; True when created."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        psycopg.connect(make_conninfo(server_url, dbname=database), connect_timeout=10).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    named = conninfo_to_dict(server_url).get("dbname")
    admin = server_url if named and named != database else make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:  # another `cai server` won the race
            return False
        return True


def ensure_trigram(libpq_url: str, database: str) -> None:
    """Prefect's migrations create the `pg_trgm` extension: refuse early, in words, where it is missing."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(libpq_url, dbname=database), connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").fetchone():
            raise RuntimeError("Prefect's tables need PostgreSQL's pg_trgm extension (contrib), which this server "
                               "lacks (the embedded server does): give --database-url of a server that has it")


def server_environment(libpq_url: str, database: str = PREFECT_DATABASE) -> dict[str, str]:
    """Environment for `prefect server start` on PostgreSQL (the database created if missing)."""
    ensure_database(libpq_url, database)
    ensure_trigram(libpq_url, database)
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": sqlalchemy_url(libpq_url, database),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A burst of triggers and flow runs holds many sessions at once; SQLAlchemy's default pool
        # (5 + 10 overflow) made requests queue behind each other.
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
        **tls_environment(libpq_url),
    }


__all__ = ["PREFECT_DATABASE", "ensure_database", "server_environment", "sqlalchemy_url", "tls_environment"]
