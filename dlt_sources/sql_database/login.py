"""What the source login may do: a superuser is refused unless the config allows it; writers are named.

A READ ONLY transaction and the query guard stop the writes they can see. A login that cannot write
stops the rest (a function of the user's own that calls dblink, say), so the README recommends one,
`cai doctor` warns about logins that can write, and a superuser login is refused outright unless the
source config says `"allow_superuser": true`.
"""

from __future__ import annotations

from typing import Any

from dlt_sources.sql_database.configuration import SqlDatabaseSourceConfig
from dlt_sources.sql_database.reports import QueryError

# (login, superuser, tables it owns or may INSERT/UPDATE/DELETE/TRUNCATE outside the system schemas)
LOGIN_POWERS = """
SELECT current_user::text, r.rolsuper,
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%'
          AND (pg_has_role(c.relowner, 'USAGE') OR has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')))
FROM pg_roles r WHERE r.rolname = current_user
"""


def superuser_check(row: Any, config: SqlDatabaseSourceConfig, connector_id: int | None) -> None:
    """Raise QueryError for a superuser login unless `allow_superuser` (``row`` = LOGIN_POWERS' row)."""
    login, superuser = row[0], row[1]
    if superuser and not config.allow_superuser:
        raise QueryError(connector_id, (
            f"source login `{login}` is a superuser, which can write, read server files and stop other sessions "
            "whatever the query guard checks; use a role that can only read (GRANT pg_read_all_data, see the "
            "README), or set `\"allow_superuser\": true` in the source config"))


def write_powers(row: Any) -> str | None:
    """What the login could write, in words, or None for a login that can only read."""
    login, superuser, writable = row[0], row[1], int(row[2] or 0)
    if superuser:
        return f"login `{login}` is a superuser"
    if writable:
        return f"login `{login}` can write {writable} table(s)"
    return None


__all__ = ["LOGIN_POWERS", "superuser_check", "write_powers"]
