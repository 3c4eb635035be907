"""File sources -> PostgreSQL through run_connector_pipeline: S3 and folders, incremental, bad files."""

from __future__ import annotations

import gzip
import io
import os
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run
from tests.awkward import AWKWARD_HEADER, AWKWARD_ROWS, awkward_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _count(url: str, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _select(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _csv_bytes(rows: list[list[str]] | None = None, header: list[str] | None = None) -> bytes:
    buffer = io.StringIO()
    import csv

    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header or AWKWARD_HEADER)
    writer.writerows(AWKWARD_ROWS if rows is None else rows)
    return buffer.getvalue().encode()


def _failed(connector_id: int) -> dict[str, Any]:
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed" and record["finished_at"] is not None
    return record


def _touch_later(path: Path) -> None:
    """Give a rewritten file a newer modification time than any the ledger saw."""
    later = time.time() + 5
    os.utime(path, (later, later))


def test_s3_glob_with_recursion_lands_in_postgres(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], warehouse: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    fs, bucket = s3_bucket["fs"], s3_bucket["bucket"]
    fs.pipe(f"{bucket}/incoming/labs_2024.csv", _csv_bytes())
    fs.pipe(f"{bucket}/incoming/nested/deeper/labs_2025.csv", _csv_bytes(AWKWARD_ROWS[:2]))
    fs.pipe(f"{bucket}/incoming/notes.txt", b"not csv")
    fs.pipe(f"{bucket}/elsewhere/labs_1999.csv", _csv_bytes())
    connector_id = make_connector(
        "minio", {"bucket": bucket, "path": "incoming", "file_pattern": "**/*.csv", **s3_bucket["credentials"]},
        "postgres", {**warehouse, "schema": schema_name},
    )
    result = run_connector_pipeline(connector_id)
    assert result["rows_ingested"] == len(AWKWARD_ROWS) + 2
    assert _count(config_store, schema_name, "labs_2024") == len(AWKWARD_ROWS)
    assert _count(config_store, schema_name, "labs_2025") == 2
    rows = _select(config_store, f"SELECT note, seen_at FROM {schema_name}.labs_2024 ORDER BY id")
    assert rows[2][0] == "line one\nline two" and rows[3] == (None, None)
    assert "test-secret-value" not in str(get_run(result["run_id"]))


def test_minio_env_vars_supply_missing_credentials(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], warehouse: dict[str, Any], schema_name: str,
    monkeypatch: pytest.MonkeyPatch, config_store: str,
) -> None:
    creds = s3_bucket["credentials"]
    monkeypatch.setenv("MINIO_ENDPOINT", creds["endpoint_url"])
    monkeypatch.setenv("MINIO_ACCESS_KEY", creds["aws_access_key_id"])
    monkeypatch.setenv("MINIO_SECRET_KEY", creds["aws_secret_access_key"])
    s3_bucket["fs"].pipe(f"{s3_bucket['bucket']}/in/visits.csv", _csv_bytes())
    connector_id = make_connector("s3", {"bucket": s3_bucket["bucket"], "path": "in", "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(connector_id)["rows_ingested"] == len(AWKWARD_ROWS)


def test_rerun_loads_nothing_and_a_new_file_loads_alone(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    awkward_csv(incoming / "visits_1.csv")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "visits"})
    assert run_connector_pipeline(connector_id)["rows_ingested"] == 5

    again = run_connector_pipeline(connector_id)
    assert again["rows_ingested"] == 0
    assert "no new or changed files: 1 file(s)" in again["log_summary"]
    assert _count(config_store, schema_name, "visits") == 5

    awkward_csv(incoming / "visits_2.csv", rows=AWKWARD_ROWS[:2])
    third = run_connector_pipeline(connector_id)
    assert third["rows_ingested"] == 2
    assert [f["file_url"].rsplit("/", 1)[1] for f in third["metrics"]["files"]] == ["visits_2.csv"]
    assert third["metrics"]["files_unchanged"] == 1
    assert _count(config_store, schema_name, "visits") == 7


def test_full_refresh_reloads_every_file_replacing_the_table(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    awkward_csv(incoming / "a.csv")
    awkward_csv(incoming / "b.csv", rows=AWKWARD_ROWS[:1])
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "visits"},
                                  source_override={"full_refresh": True})
    run_connector_pipeline(connector_id)
    second = run_connector_pipeline(connector_id)
    assert second["rows_ingested"] == 6
    assert _count(config_store, schema_name, "visits") == 6


def test_a_replace_that_postgres_refuses_keeps_the_old_rows(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    counts = incoming / "counts.csv"
    counts.write_text("id,count\n1,10\n2,20\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "counts.csv",
                                                 "columns": {"count": "bigint"}},
                                  "postgres", {**warehouse, "schema": schema_name},
                                  source_override={"full_refresh": True})
    run_connector_pipeline(connector_id)
    counts.write_text("id,count\n" + "".join(f"{i},{i}\n" for i in range(3, 100_003)) + "100003,lots\n")
    _touch_later(counts)
    record = _failed(connector_id)
    assert 'invalid input syntax for type bigint: "lots"' in record["log_summary"]
    # the replace never happened: the table holds the last good load, not nothing
    assert _select(config_store, f"SELECT id, count FROM {schema_name}.counts ORDER BY id") == [(1, 10), (2, 20)]

    # Two files replacing one table: the good one replaces it, once, whichever COPY runs first.
    (incoming / "other.csv").write_text("id,count\n7,70\n8,80\n")
    both = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                                         "columns": {"count": "bigint"}},
                          "postgres", {**warehouse, "schema": schema_name, "table_name": "counts"},
                          source_override={"full_refresh": True})
    record = _failed(both)
    assert [(f["file_url"].rsplit("/", 1)[-1], f["status"]) for f in sorted(
        record["metrics"]["files"], key=lambda f: f["file_url"])] == [("counts.csv", "failed"), ("other.csv", "loaded")]
    assert _select(config_store, f"SELECT id, count FROM {schema_name}.counts ORDER BY id") == [(7, 70), (8, 80)]


def test_merge_updates_rows_by_primary_key_when_a_file_changes(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    path = incoming / "patients.csv"
    path.write_text("id,name,ward\n1,Ana,A\n2,Li,B\n")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
        "postgres", {**warehouse, "schema": schema_name, "write_disposition": "merge", "primary_key": "id"},
    )
    run_connector_pipeline(connector_id)
    path.write_text("id,name,ward\n2,Li,C\n3,Olu,A\n")
    _touch_later(path)
    run_connector_pipeline(connector_id)
    assert _select(config_store, f"SELECT id, name, ward FROM {schema_name}.patients ORDER BY id") == [
        (1, "Ana", "A"), (2, "Li", "C"), (3, "Olu", "A")
    ]


def test_a_new_column_in_a_later_file_is_added(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    (incoming / "v1.csv").write_text("id,name\n1,Ana\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name, "table_name": "visits"})
    run_connector_pipeline(connector_id)
    (incoming / "v2.csv").write_text("id,name,Triage Level\n2,Li,3\n")
    run_connector_pipeline(connector_id)
    assert _select(config_store, f"SELECT id, name, triage_level FROM {schema_name}.visits ORDER BY id") == [
        (1, "Ana", None), (2, "Li", 3)
    ]


def test_gzip_and_latin1_files(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    (incoming / "labs.csv.gz").write_bytes(gzip.compress(_csv_bytes()))
    gz = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv.gz"},
                        "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(gz)["rows_ingested"] == len(AWKWARD_ROWS)
    assert _count(config_store, schema_name, "labs") == len(AWKWARD_ROWS)

    legacy = incoming / "legacy"
    legacy.mkdir()
    (legacy / "names.csv").write_bytes("id;name;city\n1;Müller;São Paulo\n2;Façade;Zürich\n".encode("latin-1"))
    latin = make_connector("filesystem", {"path": str(legacy), "file_pattern": "*.csv", "encoding": "latin-1",
                                          "delimiter": ";"},
                           "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(latin)["rows_ingested"] == 2
    assert _select(config_store, f"SELECT name, city FROM {schema_name}.names ORDER BY id") == [
        ("Müller", "São Paulo"), ("Façade", "Zürich")
    ]


def test_custom_null_markers_are_transcoded_for_copy(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    (incoming / "labs.csv").write_text("id,value\n1,4.5\n2,NA\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                                                 "null_values": ["", "NA"]},
                                  "postgres", {**warehouse, "schema": schema_name})
    result = run_connector_pipeline(connector_id)
    assert [f["path"] for f in result["metrics"]["files"]] == ["transcoded"]
    assert _select(config_store, f"SELECT id, value FROM {schema_name}.labs ORDER BY id") == [
        (1, Decimal("4.5")), (2, None)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"id,name\n1,a\n2,b\n3,c,extra\n4,d\n", "line 4 has the wrong number of fields"),
        (b"", "is empty"),
        (b"id,name\n1,\xff\xfe\n", "is not valid utf-8"),
    ],
    ids=["column-count", "empty", "bad-utf8"],
)
def test_malformed_file_fails_the_run_naming_file_and_line(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str,
    content: bytes, expected: str,
) -> None:
    awkward_csv(incoming / "good.csv")
    (incoming / "bad.csv").write_bytes(content)
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    record = _failed(connector_id)
    assert "bad.csv" in record["log_summary"]
    assert expected in record["log_summary"]


def test_a_value_postgres_rejects_fails_the_file_and_is_retried_after_the_fix(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    bad = incoming / "counts.csv"
    bad.write_text("id,count\n" + "".join(f"{i},{i}\n" for i in range(1, 200_001)) + "200001,lots\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                                                 "columns": {"count": "bigint"}},
                                  "postgres", {**warehouse, "schema": schema_name})
    record = _failed(connector_id)
    assert "counts.csv" in record["log_summary"]
    assert [(f["status"], f["rows"]) for f in record["metrics"]["files"]] == [("failed", 0)]
    assert 'invalid input syntax for type bigint: "lots"' in record["log_summary"]
    assert "at line 200002" in record["log_summary"]

    bad.write_text("id,count\n1,1\n2,2\n")
    _touch_later(bad)
    fixed = run_connector_pipeline(connector_id)
    assert fixed["rows_ingested"] == 2
    assert _count(config_store, schema_name, "counts") == 2


def test_skip_mode_lists_bad_files_and_loads_the_rest(
    make_connector: Callable[..., int], warehouse: dict[str, Any], incoming: Path, schema_name: str, config_store: str
) -> None:
    awkward_csv(incoming / "good.csv")
    (incoming / "ragged.csv").write_text("id,name\n1,a\n2,b,extra\n")
    (incoming / "empty.csv").write_text("")
    # more than one 1 MB block of integers, then a word, in a column pinned to bigint: rejected by COPY
    (incoming / "typed.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(400_000)) + "oops\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                                                 "on_bad_file": "skip", "columns": {"id": "bigint"}},
                                  "postgres", {**warehouse, "schema": schema_name})
    result = run_connector_pipeline(connector_id)
    record = get_run(result["run_id"])
    assert record is not None and record["status"] == "success"
    assert record["rows_ingested"] == len(AWKWARD_ROWS)
    statuses = {f["file_url"].rsplit("/", 1)[1]: f["status"] for f in record["metrics"]["files"]}
    assert statuses == {"good.csv": "loaded", "ragged.csv": "skipped", "empty.csv": "skipped", "typed.csv": "skipped"}
    for name in ("ragged.csv", "empty.csv", "typed.csv"):
        assert name in record["log_summary"]
    assert _count(config_store, schema_name, "good") == len(AWKWARD_ROWS)
    with psycopg.connect(config_store) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema_name,))}
    assert "ragged" not in tables and "empty" not in tables


def test_first_runs_of_two_connectors_into_one_schema_at_the_same_moment_both_succeed(
    make_connector: Callable[..., int], tmp_path: Path, warehouse: dict[str, Any], schema_name: str,
    config_store: str,
) -> None:
    """Two connectors' first loads into one schema, their DDL released at the same moment.

    Each would create dlt's `_dlt_*` tables there. The test holds the schema (a DROP SCHEMA in an open
    transaction) until both runs are waiting, then rolls back: both go at once. Without the
    per-schema DDL lock both saw no `_dlt_pipeline_state` and both created it; one failed on
    PostgreSQL's catalog (`pg_type_typname_nsp_index`), as one run in a burst of 40 did.
    """
    import subprocess

    from flows.store.run_records import list_runs
    from tests.flows.test_cli import CAI

    connectors = []
    for i in range(2):
        folder = tmp_path / f"in{i}"
        folder.mkdir()
        (folder / "labs.csv").write_text(f"mrn,dose\n0012{i},1.50\n")
        connectors.append(make_connector("filesystem", {"path": str(folder)}, "postgres",
                                         {**warehouse, "schema": schema_name, "table_name": f"labs_{i}"},
                                         name=f"same moment {i}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(DATABASE_URL=config_store, CAI_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    with psycopg.connect(config_store, autocommit=True) as setup:
        setup.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema_name)))
    holder = psycopg.connect(config_store)
    try:
        holder.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema_name)))  # locks it until rollback
        runs = [subprocess.Popen([CAI, "run", str(c)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for c in connectors]
        deadline = time.monotonic() + 120
        with psycopg.connect(config_store, autocommit=True) as watcher:
            while watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid() "
                                  "AND locktype IN ('object', 'advisory')").fetchone() != (2,):
                assert time.monotonic() < deadline and all(r.poll() is None for r in runs), "runs never waited"
                time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)
    assert [list_runs(c, 1)[0]["status"] for c in connectors] == ["success"] * 2
    with psycopg.connect(config_store) as conn:
        mrns = sorted(conn.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT mrn FROM {}.{}").format(sql.Identifier(schema_name), sql.Identifier(f"labs_{i}"))
            for i in range(2))).fetchall())
    assert mrns == [("00120",), ("00121",)]
