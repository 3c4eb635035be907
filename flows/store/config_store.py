"""The config-store database: where to find it, how to connect, and its versioned migrations."""

from __future__ import annotations

from importlib import resources
from types import TracebackType
from typing import Any

from cai_common.errors import CaiError
from cai_common.settings import settings
from flows.store.embedded import embedded_database_url

UTC_NOW = "(now() AT TIME ZONE 'UTC')"
"""The time to store in the spec's `timestamp without time zone` columns: UTC, whatever the session's
TimeZone (PGTZ, a role's or database's setting), so every writer and the sweep agree."""

# Any constant works: it only serialises concurrent `init-db`s against one database.
_MIGRATION_LOCK = 0x6361_6900


def database_url() -> str:
    """`DATABASE_URL`, or the embedded server's URL when it is not set."""
    return settings().database_url or embedded_database_url()


class SharedStoreRequired(CaiError, RuntimeError):
    """Something the platform runs (a worker, a deployment's flow run, a Prefect server) with no `DATABASE_URL`."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} needs `DATABASE_URL`, the config store every worker shares: an embedded "
                         "database is only for `cai demo`, `cai load-csv` and `cai run` at a terminal")


def require_shared_store(what: str) -> str:
    """`DATABASE_URL`; raises SharedStoreRequired naming ``what`` when it is not set (no embedded fallback)."""
    url = settings().database_url
    if not url:
        raise SharedStoreRequired(what)
    return url


class StoreOutdated(CaiError, RuntimeError):
    """A config store without the schema this version writes (`cai init-db` never ran, or an older one did)."""

    def __init__(self, missing: list[str], location: str) -> None:
        self.missing, self.location = missing, location
        super().__init__(f"the config store at {location} lacks schema version(s) {', '.join(missing)} that this "
                         "version of cai writes: run `cai init-db` against it (nothing was run or recorded)")


def schema_versions(url: str | None = None) -> tuple[list[str], list[str]]:
    """(applied, missing) schema versions of the config store; all missing where `cai init-db` never ran."""
    import psycopg2.errors

    shipped = [version for version, _ in migrations()]
    try:
        with connect(url) as conn:
            applied = [row["version"] for row in conn.execute("SELECT version FROM cai_schema_migrations")]
    except psycopg2.errors.UndefinedTable:
        applied = []
    return sorted(applied), [v for v in shipped if v not in applied]


def ensure_current_schema(url: str | None = None) -> str:
    """The store's latest schema version; raises StoreOutdated when it lacks one this version writes."""
    from cai_common.configuration import server_location

    applied, missing = schema_versions(url)
    if missing:
        raise StoreOutdated(missing, server_location(url or database_url()))
    return applied[-1]


class StoreConnection:
    """A connection to the config store: `execute` returns a cursor of dict rows; a `with` block
    commits at its end (rolls back on an exception) and closes the connection.

    Through psycopg2, the driver dlt's PostgreSQL destination loads in every data-path process: a
    connector run needs no second driver (psycopg 3 added 9-10 MB to its peak and 0.08 s of imports).
    """

    def __init__(self, url: str) -> None:
        import psycopg2

        self.raw = psycopg2.connect(url, connect_timeout=10)

    def execute(self, query: Any, params: Any = None) -> Any:
        """Run one statement (several when ``params`` is None: the text goes as it is); its cursor."""
        from psycopg2.extras import RealDictCursor

        cursor = self.raw.cursor(cursor_factory=RealDictCursor)
        cursor.execute(query, params)
        return cursor

    def __enter__(self) -> StoreConnection:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self.raw.commit()
            else:
                self.raw.rollback()
        finally:
            self.raw.close()


def connect(url: str | None = None) -> StoreConnection:
    """A new connection to the config store, returning rows as dicts."""
    return StoreConnection(url or database_url())


def migrations() -> list[tuple[str, str]]:
    """(version, sql) of every migration shipped in the package, in order."""
    files = resources.files("flows.store") / "migrations"
    return sorted((f.name.removesuffix(".sql"), f.read_text()) for f in files.iterdir() if f.name.endswith(".sql"))


def init_db(url: str | None = None) -> list[str]:
    """Create or upgrade the config-store schema; safe to run any number of times.

    Then seeds the lookup codes of every registered kind (`seed_lookup_codes`).

    Returns:
        The versions applied by this call (empty when the schema was already current).
    """
    applied_now = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cai_schema_migrations ("
            " version VARCHAR(255) PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in conn.execute("SELECT version FROM cai_schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())  # no parameters: sent as it is, one multi-statement script
            conn.execute("INSERT INTO cai_schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
        seed_lookup_codes(conn)
    return applied_now


def seed_lookup_codes(conn: StoreConnection) -> None:
    """Add the lookup code (and aliases) of every registered source and destination kind that is missing."""
    from dlt_destinations import DESTINATIONS
    from dlt_sources import SOURCES

    for lookup_type, registry in (("source_type", SOURCES), ("destination_type", DESTINATIONS)):
        for code, description in registry.lookup_codes():
            conn.execute(
                "INSERT INTO ad_lookup_codes (lookup_type, lookup_code, description) SELECT %s, %s, %s "
                "WHERE NOT EXISTS (SELECT 1 FROM ad_lookup_codes WHERE lookup_type = %s AND lookup_code = %s)",
                (lookup_type, code, description, lookup_type, code))
