"""Real data lands exactly: the fidelity corpus through every path, compared with its source in SQL.

The corpus (tests/corpus.py) is a PostgreSQL table of every awkward case; its CSV files are written
by psql's `\\copy` and by Excel's dialect. Each path's result is compared value by value with the
source table in SQL, never by re-reading with the library that wrote it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.paths.load_csv import load_csv
from flows.store.run_records import get_run
from tests.corpus import COLUMNS, CSV_TYPES, column_types, create_corpus, excel_csv, mismatches, psql_copy_out

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

# Corpus columns whose CSV text has no inferable type of its own: they land as text, equal to the source's text.
CSV_AS_TEXT = {"ref", "payload", "blob", "tags", "scores", "stay"}


@pytest.fixture
def corpus(config_store: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The corpus table in a schema of its own, and psql's CSV export of it in a folder."""
    schema = f"corpus_{uuid.uuid4().hex[:8]}"
    create_corpus(config_store, schema)
    folder = tmp_path / "export"
    folder.mkdir()
    data = psql_copy_out(config_store, f"SELECT * FROM {schema}.fidelity ORDER BY id", folder / "fidelity.csv")
    try:
        yield {"schema": schema, "table": f"{schema}.fidelity", "folder": folder, "csv": folder / "fidelity.csv",
               "bytes": data}
    finally:
        with psycopg.connect(config_store) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _assert_csv_landed_exactly(url: str, schema: str, source: str, table: str = "fidelity") -> None:
    assert list(column_types(url, schema, table).items()) == list(CSV_TYPES.items())  # types, in the file's order
    assert mismatches(url, f"{schema}.{table}", source, list(COLUMNS), CSV_AS_TEXT) == []


def test_the_corpus_export_is_what_real_exports_look_like(corpus: dict[str, Any]) -> None:
    """The fixture is psql's own output: fractional seconds with offsets, +05:21:10 in 1900, "" vs NULL."""
    text = corpus["bytes"].decode()
    assert "2024-03-01 13:45:42.123456+05:30" in text
    assert "1900-01-01 05:21:10+05:21:10" in text
    assert "\n4,\"\",\"\",,,," in text  # row 4: empty strings quoted, NULLs bare
    assert "12345678901234567890.123456789012345678" in text and ",08123," in text


def test_load_csv_lands_psql_export_exactly(corpus: dict[str, Any], config_store: str, schema_name: str) -> None:
    outcome = load_csv(str(corpus["csv"]), config_store, schema_name)
    _assert_csv_landed_exactly(config_store, schema_name, corpus["table"])
    assert outcome.rows == 6
    recon = outcome.metrics["reconciliation"]
    assert (recon["rows_read"], recon["rows_written"], recon["agree"]) == (6, 6, True)


def test_folder_connector_lands_psql_export_exactly(
    corpus: dict[str, Any], make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector("filesystem", {"path": str(corpus["folder"]), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == 6
    _assert_csv_landed_exactly(config_store, schema_name, corpus["table"])
    record = get_run(result["run_id"])
    assert record is not None and record["metrics"]["reconciliation"]["rows_written"] == 6


def test_s3_connector_lands_psql_export_exactly(
    corpus: dict[str, Any], make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str,
    config_store: str, s3_bucket: dict[str, Any],
) -> None:
    s3_bucket["fs"].pipe(f"{s3_bucket['bucket']}/drop/fidelity.csv", corpus["bytes"])
    connector_id = make_connector("s3", {"bucket": s3_bucket["bucket"], "path": "drop", "file_pattern": "*.csv",
                                         **s3_bucket["credentials"]},
                                  "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(connector_id)["rows_ingested"] == 6
    _assert_csv_landed_exactly(config_store, schema_name, corpus["table"])


def test_excel_csv_with_crlf_and_bom_lands_exactly(
    corpus: dict[str, Any], config_store: str, schema_name: str, tmp_path: Path,
) -> None:
    # Excel writes NULL and '' alike, so the row of empty strings stays out of this file.
    source = f"(SELECT * FROM {corpus['table']} WHERE id <> 4)"
    path = tmp_path / "excel" / "fidelity.csv"
    path.parent.mkdir()
    excel_csv(config_store, f"SELECT * FROM {source} x ORDER BY id", path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid,") and b"\r\n" in raw
    load_csv(str(path), config_store, schema_name)
    _assert_csv_landed_exactly(config_store, schema_name, source)


def test_timestamps_as_other_systems_write_them_land_as_postgresql_reads_them(
    config_store: str, schema_name: str, tmp_path: Path,
) -> None:
    """0 to 9 fractional digits, `T` or space, offsets `+05:30`, `+00`, `-03`, `Z` or none, 1900 to 2262."""
    values = [
        ("2024-03-01T08:15:42.123456789Z", "2024-03-01T08:15:42.123456789", "2024-03-01", "08:15:42.123456789"),
        ("2024-03-01 08:15:42+05:30", "2024-03-01 08:15:42", "1969-12-31", "00:00"),
        ("1969-12-31 23:59:59.9999995+00", "1969-12-31 23:59:59.9999995", "1900-02-28", "23:59:59.9999994"),
        ("2039-01-01 00:00:00.1-03", "2039-01-01 00:00:00.1", "2039-01-01", "12:00:00.1"),
        ("1900-06-30 12:00:00+00:00", "1900-06-30 12:00:00", "2262-04-12", "07:00:00.000001"),
        ("", "", "", ""),
    ]
    folder = tmp_path / "ts"
    folder.mkdir()
    lines = ["id,at,local_at,day,clock"] + [f"{i},{','.join(v)}" for i, v in enumerate(values, 1)]
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    load_csv(str(folder / "events.csv"), config_store, schema_name)
    assert column_types(config_store, schema_name, "events") == {
        "id": "bigint", "at": "timestamp with time zone", "local_at": "timestamp without time zone",
        "day": "date", "clock": "time without time zone"}
    expected = ", ".join(
        f"({i}, NULLIF('{a}', '')::timestamptz, NULLIF('{b}', '')::timestamp, NULLIF('{c}', '')::date, "
        f"NULLIF('{d}', '')::time)" for i, (a, b, c, d) in enumerate(values, 1))
    source = f"(SELECT * FROM (VALUES {expected}) AS v(id, at, local_at, day, clock))"
    assert mismatches(config_store, f"{schema_name}.events", source, ["at", "local_at", "day", "clock"]) == []
    # PostgreSQL keeps microseconds and rounds the rest: .123456789 -> .123457
    assert _rows(config_store, f"SELECT extract(microseconds FROM at)::int FROM {schema_name}.events WHERE id = 1") \
        == [(42123457,)]


def test_pg_to_pg_keeps_every_column_type_and_value(
    corpus: dict[str, Any], make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    connector_id = make_connector("postgres", {**reader, "query": f"SELECT * FROM {corpus['table']}"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "fidelity"})
    result = run_connector_pipeline(connector_id)
    assert list(column_types(config_store, schema_name, "fidelity").items()) == list(COLUMNS.items())
    assert mismatches(config_store, f"{schema_name}.fidelity", corpus["table"], list(COLUMNS)) == []
    assert result["rows_ingested"] == 6
    recon = result["metrics"]["reconciliation"]
    assert (recon["rows_read"], recon["rows_written"]) == (6, 6)
    assert "landed as text" not in result["log_summary"]


def test_pg_to_pg_lands_an_enum_as_text_and_says_so(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], schema_name: str, config_store: str,
    source_schema: str,
) -> None:
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE TYPE {source_schema}.mood AS ENUM ('ok', 'sad')")
        conn.execute(f"CREATE DOMAIN {source_schema}.positive AS numeric(6,2) CHECK (VALUE > 0)")
        conn.execute(f"CREATE TABLE {source_schema}.feelings (id int, mood {source_schema}.mood, "
                     f"dose {source_schema}.positive)")
        conn.execute(f"INSERT INTO {source_schema}.feelings VALUES (1, 'sad', 1.5), (2, NULL, NULL)")
    connector_id = make_connector("postgres", {**reader, "query": f"SELECT * FROM {source_schema}.feelings"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "feelings"})
    result = run_connector_pipeline(connector_id)
    # PostgreSQL describes a domain's column by its base type; an enum has no equivalent elsewhere.
    assert column_types(config_store, schema_name, "feelings") == {
        "id": "integer", "mood": "text", "dose": "numeric(6,2)"}
    assert f"landed as text (no exact type in the destination): mood ({source_schema}.mood)" in result["log_summary"]
    assert mismatches(config_store, f"{schema_name}.feelings", f"{source_schema}.feelings", ["mood", "dose"],
                      {"mood"}) == []


def test_query_export_is_byte_identical_to_psql(
    corpus: dict[str, Any], make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], config_store: str,
    tmp_path: Path,
) -> None:
    query = f"SELECT * FROM {corpus['table']} ORDER BY id"
    out = tmp_path / "out"
    connector_id = make_connector("postgres", {**reader, "query": query, "csv_filename": "fidelity.csv"},
                                  "nfs", {"path": str(out)})
    result = run_connector_pipeline(connector_id)
    expected = psql_copy_out(config_store, query, tmp_path / "psql.csv", timezone=None)
    assert (out / "fidelity.csv").read_bytes() == expected
    (delivered,) = result["metrics"]["files"]
    assert delivered["bytes"] == len(expected) and delivered["sha256"] == hashlib.sha256(expected).hexdigest()


def test_a_rows_disagreement_fails_the_run_stating_both_numbers(
    corpus: dict[str, Any], make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    """A destination trigger that quietly drops a row: COPY reports 5 rows written of 6 read."""
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE SCHEMA {schema_name}")
        conn.execute(f"CREATE TABLE {schema_name}.fidelity (LIKE {corpus['table']})")
        conn.execute(f"CREATE FUNCTION {schema_name}.drop_two() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN IF NEW.id = 2 THEN RETURN NULL; END IF; RETURN NEW; END $$")
        conn.execute(f"CREATE TRIGGER drop_two BEFORE INSERT ON {schema_name}.fidelity FOR EACH ROW "
                     f"EXECUTE FUNCTION {schema_name}.drop_two()")
    connector_id = make_connector("postgres", {**reader, "query": f"SELECT * FROM {corpus['table']}"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "fidelity"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    summary = caught.value.result["log_summary"]
    assert "rows read from the source (6) and rows written to the destination (5) disagree" in summary
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert record["metrics"]["reconciliation"]["agree"] is False


def test_a_leading_zero_deep_in_a_file_keeps_the_column_text(
    config_store: str, schema_name: str, tmp_path: Path,
) -> None:
    """Types come from every value, not the first block: MRN 0123 in row 300,000 keeps all MRNs text."""
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE SCHEMA {schema_name}")
        conn.execute(f"CREATE TABLE {schema_name}.src AS SELECT g AS id, g::text AS mrn, g * 1.5 AS dose "
                     "FROM generate_series(1, 300000) g")
        conn.execute(f"UPDATE {schema_name}.src SET mrn = '0123', dose = '12345678901234567.25' WHERE id = 299999")
    folder = tmp_path / "late"
    folder.mkdir()
    psql_copy_out(config_store, f"SELECT * FROM {schema_name}.src", folder / "patients.csv")
    assert (folder / "patients.csv").stat().st_size > 3 * 1024 * 1024  # well past the first 1 MB block
    load_csv(str(folder / "patients.csv"), config_store, schema_name)
    assert column_types(config_store, schema_name, "patients") == {"id": "bigint", "mrn": "text", "dose": "numeric"}
    assert mismatches(config_store, f"{schema_name}.patients", f"{schema_name}.src", ["mrn", "dose"]) == []


def test_pinned_column_types_win_over_inference(
    make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str, config_store: str,
    incoming: Path,
) -> None:
    (incoming / "doses.csv").write_text("mrn,dose,code,taken\n12345,1.5,7,2024-03-01\n00042,2.25,8,\n")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                       "columns": {"MRN": "text", "dose": "numeric(10, 3)", "code": "varchar(5)",
                                   "taken": "timestamptz"}},
        "postgres", {**warehouse, "schema": schema_name})
    run_connector_pipeline(connector_id)
    assert column_types(config_store, schema_name, "doses") == {
        "mrn": "text", "dose": "numeric(10,3)", "code": "character varying(5)",
        "taken": "timestamp with time zone"}
    assert _rows(config_store, f"SELECT mrn, dose::text, code FROM {schema_name}.doses ORDER BY mrn") == [
        ("00042", "2.250", "8"), ("12345", "1.500", "7")]


def test_a_bad_pinned_type_fails_naming_connector_field_and_value(
    make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str, incoming: Path,
) -> None:
    connector_id = make_connector("filesystem", {"path": str(incoming), "columns": {"mrn": "txet"}},
                                  "postgres", {**warehouse, "schema": schema_name})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert (f"connector {connector_id}: source `columns.mrn` must be a PostgreSQL type such as `text`"
            in caught.value.result["log_summary"]) and "got `txet`" in caught.value.result["log_summary"]


@pytest.mark.parametrize(
    ("content", "columns", "problem"),
    [
        ("id,count\n1,5\n2,abc\n", {"count": "integer"}, 'invalid input syntax for type integer: "abc" at line 3, '
                                                         'column count: "abc"'),
        ("id,day\n1,2024-01-31\n2,2024-13-45\n", {}, 'date/time field value out of range: "2024-13-45" at line 3, '
                                                     'column day: "2024-13-45"'),
    ],
    ids=["abc-in-integer", "month-13-in-date"],
)
def test_a_value_that_does_not_fit_fails_its_file_or_is_skipped_leaving_nothing(
    make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str, config_store: str,
    incoming: Path, content: str, columns: dict[str, str], problem: str,
) -> None:
    (incoming / "a_good.csv").write_text(content.split("\n", 1)[0] + "\n7,1\n" if "count" in content
                                         else "id,day\n7,2024-02-29\n")
    (incoming / "b_bad.csv").write_text(content)
    source = {"path": str(incoming), "file_pattern": "*.csv", "columns": columns}
    target = {**warehouse, "schema": schema_name, "table_name": "values_in"}
    failing = make_connector("filesystem", source, "postgres", target)
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(failing)
    summary = caught.value.result["log_summary"]
    assert "b_bad.csv" in summary and problem in summary, summary
    assert _rows(config_store, f"SELECT id FROM {schema_name}.values_in") == [(7,)]  # the good file only

    with psycopg.connect(config_store) as conn:
        conn.execute(f"DROP SCHEMA {schema_name} CASCADE")
    skipping = make_connector("filesystem", {**source, "on_bad_file": "skip"}, "postgres", target)
    result = run_connector_pipeline(skipping)
    statuses = {f["file_url"].rsplit("/", 1)[1]: (f["status"], f["rows"]) for f in result["metrics"]["files"]}
    assert statuses == {"a_good.csv": ("loaded", 1), "b_bad.csv": ("skipped", 0)}
    assert "skipped" in result["log_summary"] and problem in result["log_summary"]
    assert _rows(config_store, f"SELECT id FROM {schema_name}.values_in") == [(7,)]  # nothing of the bad file


def test_a_file_that_would_change_a_tables_values_fails_naming_the_column(
    make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str, config_store: str,
    incoming: Path,
) -> None:
    """The table holds mrn as bigint (an earlier file of plain numbers); `0042` would lose its zeros."""
    (incoming / "a.csv").write_text("mrn\n1234\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "patients"})
    run_connector_pipeline(connector_id)
    (incoming / "b.csv").write_text("mrn\n0042\n")
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert ("column `mrn` holds text values but table `patients` already has it as bigint; loading would change "
            "them") in caught.value.result["log_summary"]
    assert _rows(config_store, f"SELECT mrn FROM {schema_name}.patients") == [(1234,)]
