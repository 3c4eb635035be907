"""The read-only guard: only a single SELECT reaches the database."""

from __future__ import annotations

import pytest

from cai_common import ConnectorConfigError
from dlt_sources.sql_database import ensure_read_only_query


@pytest.mark.parametrize("query", [
    "SELECT 1",
    "select id, note from visits where note like '%;%' order by id",
    "WITH recent AS (SELECT * FROM visits WHERE seen_at > now() - interval '1 day') SELECT * FROM recent",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT $$a; DROP TABLE x$$ AS not_a_statement",
])
def test_reads_pass(query: str) -> None:
    ensure_read_only_query(query, 7)


@pytest.mark.parametrize(("query", "problem"), [
    ("DELETE FROM visits", "must be a SELECT (or WITH ... SELECT), got `DELETE`"),
    ("SELECT 1; DROP TABLE visits", "must be a single SELECT statement, got 2 statements"),
    ("WITH gone AS (DELETE FROM visits RETURNING *) SELECT * FROM gone", "contains `DELETE`"),
    ("SELECT * INTO copy_of_visits FROM visits", "`SELECT ... INTO` creates a table"),
    ("SELECT * FROM visits FOR UPDATE", "locks rows"),
    ("TRUNCATE visits", "must be a SELECT"),
    ("SELEC 1", "does not parse"),
    ("   ", "got 0 statements"),
])
def test_anything_else_is_rejected_naming_connector_and_field(query: str, problem: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        ensure_read_only_query(query, 7)
    assert str(caught.value).startswith("connector 7: source `query` ")
    assert problem in str(caught.value)
