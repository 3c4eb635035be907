"""Proof that a user's query only reads, before it touches the database.

The query must parse (PostgreSQL dialect) as exactly one SELECT, WITH ... SELECT, set operation
(UNION/INTERSECT/EXCEPT), `VALUES` list or `TABLE t`, with no INSERT/UPDATE/DELETE/MERGE/DDL
anywhere inside (a data-modifying CTE is rejected too), no `SELECT ... INTO` and no row locks. The
statement then runs in a READ ONLY transaction, so a write in the database (nextval, a write in a
PL/pgSQL function) is stopped by PostgreSQL itself.

A READ ONLY transaction does not stop what acts outside it: dblink opens a connection of its own,
the large-object functions write server files, pg_terminate_backend kills other sessions,
set_config can turn read-only off. Such functions are refused by name. A function of the user's own
that calls them is beyond any parse: a source login that cannot write is the real guarantee (README).
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from cai_common import ConnectorConfigError

_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy)

# Functions whose effects escape the READ ONLY transaction (other connections, server files, other
# sessions, settings, locks, replication, notifications), or that run a query given as a string.
SIDE_EFFECT_FUNCTIONS = frozenset({
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal",
    "pg_promote", "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_backup_start", "pg_backup_stop",
    "pg_start_backup", "pg_stop_backup", "pg_log_backend_memory_contexts", "pg_stat_file", "pg_notify",
    "set_config", "loread", "lowrite", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "pg_sequence_last_value",
})
SIDE_EFFECT_PREFIXES = (
    "dblink", "lo_", "pg_advisory_", "pg_try_advisory_", "pg_read_", "pg_ls_", "pg_file_", "pg_stat_reset",
    "pg_create_", "pg_drop_", "pg_replication_", "pg_logical_", "pg_import_", "pg_export_", "pg_copy_",
)
# `TABLE name` is `SELECT * FROM name`; sqlglot reads it otherwise.
_TABLE = re.compile(r"^\s*TABLE\s+((?:ONLY\s+)?[\w.\"]+)\s*;?\s*$", re.IGNORECASE)
# `ORDER BY x USING <` (an operator as sort order) reads only; sqlglot cannot parse it, so it is left
# out of the parse (the query still runs as given).
_ORDER_USING = re.compile(r"\bUSING\s*(?:OPERATOR\s*\([^)]*\)|[<>=~!@#%^&|`?+\-*/]+)", re.IGNORECASE)


def side_effect(name: str) -> bool:
    """Whether a function of this name acts outside a READ ONLY transaction."""
    name = name.lower().rsplit(".", 1)[-1].strip('"')
    return name in SIDE_EFFECT_FUNCTIONS or name.startswith(SIDE_EFFECT_PREFIXES)


def ensure_read_only_query(query: str, connector_id: int | None = None) -> None:
    """Raise ConnectorConfigError (naming the connector and `query`) unless ``query`` is one read statement."""

    def reject(problem: str) -> ConnectorConfigError:
        return ConnectorConfigError(connector_id, "source", "query", problem)

    table = _TABLE.match(query)
    try:
        parsed = f"SELECT * FROM {table[1]}" if table else _ORDER_USING.sub(" ", statement_text(query))
        statements = [s for s in sqlglot.parse(parsed, read="postgres") if s is not None]
    except ParseError as exc:
        raise reject(f"must be a valid PostgreSQL SELECT; it does not parse: {exc.errors[0]['description']}") from None
    except TokenError as exc:
        raise reject(f"must be a valid PostgreSQL SELECT; it does not parse: {exc}") from None
    if len(statements) != 1:
        raise reject(f"must be a single SELECT statement, got {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Select | exp.SetOperation | exp.Values):
        raise reject(f"must be a SELECT (or WITH ... SELECT), got `{statement.key.upper()}`")
    for node in statement.walk():
        if isinstance(node, _WRITES):
            raise reject(f"must only read, but contains `{node.key.upper()}`")
        if isinstance(node, exp.Select) and node.args.get("into"):
            raise reject("must only read, but `SELECT ... INTO` creates a table")
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise reject("must only read, but `FOR UPDATE`/`FOR SHARE` locks rows")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if side_effect(name):
                raise reject(f"must only read, but calls `{name.lower()}`, whose effects a read-only transaction "
                             "does not stop (other connections, server files, other sessions or settings)")


def statement_text(query: str) -> str:
    """The query without trailing semicolons and comments, to embed in `COPY ( ... ) TO` (a trailing
    `-- comment` would swallow the closing parenthesis)."""
    from sqlglot.dialects.postgres import Postgres

    tokens = [t for t in Postgres().tokenize(query) if t.token_type.name != "SEMICOLON"]
    return query[: tokens[-1].end + 1] if tokens else query
