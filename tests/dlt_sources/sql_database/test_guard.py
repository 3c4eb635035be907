"""The read-only guard: only a single SELECT reaches the database."""

from __future__ import annotations

import pytest

from cai_common import ConnectorConfigError
from dlt_sources.sql_database import ensure_read_only_query
from dlt_sources.sql_database.guard import statement_text


@pytest.mark.parametrize("query", [
    "SELECT 1",
    "select id, note from visits where note like '%;%' order by id",
    "WITH recent AS (SELECT * FROM visits WHERE seen_at > now() - interval '1 day') SELECT * FROM recent",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT $$a; DROP TABLE x$$ AS not_a_statement",
    "SELECT id FROM visits -- the nightly extract",
    "SELECT id FROM visits; -- done\n",
    "TABLE visits",
    "table only clinic.visits;",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT id FROM visits ORDER BY id USING <",
    "SELECT id FROM visits ORDER BY id USING OPERATOR(pg_catalog.>)",
    "SELECT lower(name), count(*), pg_size_pretty(pg_database_size(current_database())) FROM visits GROUP BY 1",
])
def test_reads_pass(query: str) -> None:
    ensure_read_only_query(query, 7)


@pytest.mark.parametrize(("query", "function"), [
    ("SELECT dblink_exec('dbname=src', 'DELETE FROM visits')", "dblink_exec"),
    ("SELECT * FROM dblink('dbname=src', 'DELETE FROM visits RETURNING id') AS t(id int)", "dblink"),
    ("SELECT public.dblink_exec('a', 'b')", "dblink_exec"),
    ("SELECT lo_export(lo_import('/etc/passwd'), '/tmp/x')", "lo_export"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "pg_terminate_backend"),
    ("SELECT pg_cancel_backend(42)", "pg_cancel_backend"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT pg_read_binary_file('/etc/passwd')", "pg_read_binary_file"),
    ("SELECT * FROM pg_ls_dir('/')", "pg_ls_dir"),
    ("SELECT pg_file_write('/tmp/x', 'y', false)", "pg_file_write"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
    ("SELECT pg_reload_conf()", "pg_reload_conf"),
    ("WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l", "pg_advisory_lock"),
    ("SELECT * FROM visits WHERE pg_try_advisory_lock(id)", "pg_try_advisory_lock"),
    ("SELECT query_to_xml('select 1', true, true, '')", "query_to_xml"),
    ("SELECT \"dblink_exec\"('a', 'b')", "dblink_exec"),
])
def test_functions_acting_outside_the_read_only_transaction_are_refused_by_name(query: str, function: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        ensure_read_only_query(query, 7)
    assert str(caught.value).startswith(f"connector 7: source `query` must only read, but calls `{function}`")


@pytest.mark.parametrize(("query", "embedded"), [
    ("SELECT 1 -- note", "SELECT 1"),
    ("SELECT ';' AS x;  -- done\n;", "SELECT ';' AS x"),
    ("TABLE visits", "TABLE visits"),
])
def test_statement_text_drops_trailing_semicolons_and_comments(query: str, embedded: str) -> None:
    assert statement_text(query) == embedded


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
