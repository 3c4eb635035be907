"""A CSV's typing pass runs beside its COPY: what the pass finds late still decides what lands.

The table is created from the file's first rows; the pass over every value delivers its verdict
while PostgreSQL copies. Every file here is psql's own export of a query whose late rows differ
from the first ones, and what lands is compared in SQL with the same file read by psql as text.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.flows.test_cli import CAI

pytestmark = [pytest.mark.cli, pytest.mark.slow]

ROWS = 200_000
# Late rows unlike the first ~850 the table is created from: a decimal dose, an MRN with a leading
# zero, and a discharge date in a column empty for the first 5,000 rows.
EXPORT = f"""
SELECT g AS id,
       CASE WHEN g = 150000 THEN '007123' ELSE (100000 + g)::text END AS mrn,
       CASE WHEN g = 160000 THEN 2.5 ELSE g END AS dose,
       CASE WHEN g > 5000 THEN date '2024-01-01' + g % 300 END AS discharged,
       'note ' || g AS note
FROM generate_series(1, {ROWS}) g"""
# What those columns must land as: the narrowest type holding every value unchanged.
TYPES = [("id", "bigint"), ("mrn", "text"), ("dose", "numeric"), ("discharged", "date"), ("note", "text")]


def _psql(url: str, command: str) -> None:
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", command], check=True, capture_output=True)


def _export(url: str, path: Path, query: str = EXPORT) -> None:
    _psql(url, f"\\copy ({' '.join(query.split())}) to '{path}' csv header")


def _load(url: str, path: Path, schema: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CAI, "load-csv", str(path), "--to", url, "--schema", schema, *more],
                          env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=240, check=False)


def _refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    """`load-csv` failed, saying why in its own words: no traceback on the terminal."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def _one(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _types(url: str, schema: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(name, pg_type) for name, pg_type in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_dlt%%' "
            "ORDER BY attnum", (f'"{schema}"."{table}"',)).fetchall()]


def _as_text(url: str, path: Path, table: str) -> None:
    """The file as psql reads it, every column text: what landing must not change."""
    _psql(url, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id text, mrn text, dose text, "
               f"discharged text, note text)")
    _psql(url, f"\\copy {table} from '{path}' csv header")


def _unchanged(url: str, schema: str, table: str, reference: str) -> int:
    """Rows whose every value reads back as the file wrote it."""
    return int(_one(url, f"""
        SELECT count(*) FROM "{schema}"."{table}" t JOIN {reference} r ON t.id::text = r.id
        WHERE t.mrn IS NOT DISTINCT FROM r.mrn AND t.dose::text IS NOT DISTINCT FROM r.dose
          AND t.discharged::text IS NOT DISTINCT FROM r.discharged AND t.note IS NOT DISTINCT FROM r.note"""))


def test_late_values_give_their_columns_the_type_every_value_needs(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    path = tmp_path / "visits.csv"
    _export(config_store, path)
    _as_text(config_store, path, f"ref_{schema_name}")
    loaded = _load(config_store, path, schema_name)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"loaded {ROWS} rows" in loaded.stdout
    # created from the first rows as bigint, bigint and text; the verdict widened two and narrowed one
    assert _types(config_store, schema_name, "visits") == TYPES
    assert _one(config_store, f'SELECT count(*) FROM "{schema_name}".visits') == ROWS
    assert _unchanged(config_store, schema_name, "visits", f"ref_{schema_name}") == ROWS
    assert _one(config_store, f"SELECT mrn FROM \"{schema_name}\".visits WHERE id = 150000") == "007123"
    _psql(config_store, f"DROP TABLE ref_{schema_name}")


def test_a_late_value_an_existing_column_would_change_fails_the_file_and_lands_nothing(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    first = tmp_path / "first" / "visits.csv"
    first.parent.mkdir()
    _export(config_store, first)
    assert _load(config_store, first, schema_name).returncode == 0
    # id is bigint now; this file's ids look the same for 180,000 rows, then one keeps a leading zero,
    # which bigint would turn into 200042 without a word.
    later = tmp_path / "later" / "visits.csv"
    later.parent.mkdir()
    _export(config_store, later, EXPORT.replace("SELECT g AS id", "SELECT CASE WHEN g = 180000 THEN '0200042' "
                                                "ELSE (200000 + g)::text END AS id"))
    _refused(_load(config_store, later, schema_name),
             "column `id` holds text values but table `visits` already has it as bigint")
    assert _one(config_store, f'SELECT count(*) FROM "{schema_name}".visits') == ROWS


def test_a_late_bad_record_in_a_replace_keeps_the_old_rows_and_names_its_line(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    path = tmp_path / "visits.csv"
    _export(config_store, path)
    assert _load(config_store, path, schema_name).returncode == 0
    with path.open("a") as out:  # a record with a field too many, after 200,000 good ones
        out.write("200001,200001,1,2024-01-01,note,extra\n")
    _refused(_load(config_store, path, schema_name, "--replace"), f"line {ROWS + 2} has the wrong number of fields")
    assert _one(config_store, f'SELECT count(*) FROM "{schema_name}".visits') == ROWS
    assert _one(config_store, f'SELECT max(id) FROM "{schema_name}".visits') == ROWS


def test_a_load_left_by_a_dead_process_is_typed_again_before_it_lands(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    path = tmp_path / "visits.csv"
    _export(config_store, path)
    _as_text(config_store, path, f"ref_{schema_name}")
    pipelines = tmp_path / "pipelines"
    # The process dies as its COPY starts: the load package (its table typed from the first rows:
    # mrn and dose bigint) is left pending, and its typing pass died with it.
    die = ("import os, sys\n"
           "from dlt_destinations.postgres.client import ExactCsvCopyJob\n"
           "ExactCsvCopyJob.run = lambda self: os._exit(9)\n"
           "from flows.cli import app\n"
           "sys.argv = ['cai', 'load-csv', *sys.argv[1:]]\n"
           "app()\n")
    dead = subprocess.run([str(Path(CAI).parent / "python"), "-c", die, str(path), "--to", config_store,
                           "--schema", schema_name],
                          env={**os.environ, "CAI_PIPELINES_DIR": str(pipelines)}, capture_output=True, text=True,
                          timeout=240, check=False)
    assert dead.returncode == 9, dead.stdout + dead.stderr
    assert list(pipelines.glob("load_csv_*/load/normalized/*")), "no load package was left pending"

    again = subprocess.run([CAI, "load-csv", str(path), "--to", config_store, "--schema", schema_name],
                           env={**os.environ, "CAI_PIPELINES_DIR": str(pipelines), "COLUMNS": "250"},
                           capture_output=True, text=True, timeout=240, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already loaded" in again.stdout  # by the dead run's package, finished first
    assert _types(config_store, schema_name, "visits") == TYPES
    assert _unchanged(config_store, schema_name, "visits", f"ref_{schema_name}") == ROWS
    assert _one(config_store, f'SELECT count(*) FROM "{schema_name}".visits') == ROWS
    _psql(config_store, f"DROP TABLE ref_{schema_name}")
