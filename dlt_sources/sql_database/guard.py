"""Proof that a user's query only reads, before it touches the database.

The query must parse (PostgreSQL dialect) as exactly one SELECT, WITH ... SELECT or set operation
(UNION/INTERSECT/EXCEPT) with no INSERT/UPDATE/DELETE/MERGE/DDL anywhere inside (a data-modifying
CTE is rejected too), no `SELECT ... INTO` and no row locks. The statement then runs in a READ ONLY
transaction, so a function with side effects (nextval, a write in a PL/pgSQL function) is stopped by
PostgreSQL itself.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from cai_common import ConnectorConfigError

_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy)


def ensure_read_only_query(query: str, connector_id: int | None = None) -> None:
    """Raise ConnectorConfigError (naming the connector and `query`) unless ``query`` is one read statement."""

    def reject(problem: str) -> ConnectorConfigError:
        return ConnectorConfigError(connector_id, "source", "query", problem)

    try:
        statements = [s for s in sqlglot.parse(query, read="postgres") if s is not None]
    except ParseError as exc:
        raise reject(f"must be a valid PostgreSQL SELECT; it does not parse: {exc.errors[0]['description']}") from None
    if len(statements) != 1:
        raise reject(f"must be a single SELECT statement, got {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Select | exp.SetOperation):
        raise reject(f"must be a SELECT (or WITH ... SELECT), got `{statement.key.upper()}`")
    for node in statement.walk():
        if isinstance(node, _WRITES):
            raise reject(f"must only read, but contains `{node.key.upper()}`")
        if isinstance(node, exp.Select) and node.args.get("into"):
            raise reject("must only read, but `SELECT ... INTO` creates a table")
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise reject("must only read, but `FOR UPDATE`/`FOR SHARE` locks rows")
