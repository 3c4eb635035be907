"""A fleet, not one machine: the same connector's next run lands on another worker with an empty disk.

Each "machine" is its own `CAI_HOME` and pipelines directory; the two share only `DATABASE_URL`, as
two worker pods with `emptyDir` volumes do. What a run remembers must come back on the other one:
copy transfers' delivered files from the config store (`cai_delivered_files`), CSV ledgers and dlt's
state and schema from the PostgreSQL destination.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.dlt_pipeline_flow import run_connector_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

FILES = {"in/labs.csv": b"id,value\n1,2.5\n", "in/2024/q1/notes.txt": "Zoë's notes\n".encode(),
         "in/scan.bin": os.urandom(3 * 1024 * 1024)}


@pytest.fixture
def machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``on("B")`` makes the process another machine: its own empty `CAI_HOME` and pipelines directory."""

    def on(name: str) -> None:
        home = tmp_path / f"machine_{name}"
        home.mkdir()
        monkeypatch.setenv("CAI_HOME", str(home))
        monkeypatch.setenv("CAI_PIPELINES_DIR", str(home / "pipelines"))

    on("A")
    return on


def _fill(s3: dict[str, Any]) -> None:
    for key, data in FILES.items():
        s3["fs"].pipe(f"{s3['bucket']}/{key}", data)


def _s3_source(s3: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"bucket": s3["bucket"], "path": "in", "file_pattern": "**/*", "transfer": "copy", **s3["credentials"],
            **extra}


def _copies_once_across_machines(connector_id: int, on: Callable[[str], None]) -> dict[str, Any]:
    first = run_connector_pipeline(connector_id)
    assert sorted(f["status"] for f in first["metrics"]["files"]) == ["copied"] * len(FILES)
    on("B")
    second = run_connector_pipeline(connector_id)
    assert second["metrics"]["files"] == [] and second["metrics"]["files_unchanged"] == len(FILES)
    assert f"{len(FILES)} unchanged file(s) already copied" in second["log_summary"]
    return first


def test_a_copy_to_rest_on_another_machine_uploads_nothing_again(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], upload_server: Any,
    machines: Callable[[str], None], config_store: str,
) -> None:
    _fill(s3_bucket)
    connector_id = make_connector("s3", _s3_source(s3_bucket), "rest_api", {"url": upload_server.url})
    first = _copies_once_across_machines(connector_id, machines)
    assert len(upload_server.uploads) == len(FILES)
    # What the backend can ask: what this connector delivered, each source file's version and hash.
    with psycopg.connect(config_store) as conn:
        rows = conn.execute("SELECT file_url, version, destination_url, sha256 FROM cai_delivered_files "
                            "WHERE connector_id = %s ORDER BY file_url", (connector_id,)).fetchall()
    assert [(r[0], r[3]) for r in rows] == sorted((f["file_url"], f["sha256"]) for f in first["metrics"]["files"])
    assert all(r[1]["size"] in {len(d) for d in FILES.values()} and r[2].startswith(upload_server.url[:20])
               for r in rows)

    s3_bucket["fs"].pipe(f"{s3_bucket['bucket']}/in/labs.csv", b"id,value\n1,2.5\n2,4\n")  # a new version
    machines("C")
    third = run_connector_pipeline(connector_id)
    assert [f["file_url"].rsplit("/", 1)[1] for f in third["metrics"]["files"]] == ["labs.csv"]
    assert len(upload_server.uploads) == len(FILES) + 1


def _destination(kind: str, s3: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
                 upload_server: Any) -> dict[str, Any]:
    return {
        "nfs": {"path": str(tmp_path / "archive")},
        "s3": {"bucket": s3["bucket"], "prefix": "archive", **s3["credentials"]},
        "sftp": {"host": sftp_server["host"], "port": sftp_server["port"], "username": "loader",
                 "password": "sftp-pass-123", "path": f"/{tmp_path.name}", "known_hosts": sftp_server["known_hosts"]},
        "rest_api": {"url": upload_server.url},
    }[kind]


@pytest.mark.parametrize("destination", ["nfs", "s3", "sftp"])
def test_a_copy_to_files_on_another_machine_sends_nothing_again(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
    machines: Callable[[str], None], destination: str, upload_server: Any,
) -> None:
    _fill(s3_bucket)
    config = _destination(destination, s3_bucket, sftp_server, tmp_path, upload_server)
    connector_id = make_connector("s3", _s3_source(s3_bucket), destination, config)
    _copies_once_across_machines(connector_id, machines)


@pytest.mark.parametrize("destination", ["nfs", "s3", "sftp", "rest_api"])
def test_a_move_on_another_machine_finds_nothing_left_to_move(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
    machines: Callable[[str], None], destination: str, upload_server: Any,
) -> None:
    _fill(s3_bucket)
    config = _destination(destination, s3_bucket, sftp_server, tmp_path, upload_server)
    connector_id = make_connector("s3", _s3_source(s3_bucket, transfer="move"), destination, config)
    first = run_connector_pipeline(connector_id)
    assert sorted(f["status"] for f in first["metrics"]["files"]) == ["moved"] * len(FILES)
    machines("B")
    second = run_connector_pipeline(connector_id)
    assert second["metrics"]["files"] == [] and "moved 0 of 0 file(s)" in second["log_summary"]
    if destination == "rest_api":
        assert len(upload_server.uploads) == len(FILES)


def test_query_connectors_on_another_machine_land_what_they_land_on_the_first(
    make_connector: Callable[..., int], reader: dict[str, Any], warehouse: dict[str, Any], schema_name: str,
    source_schema: str, s3_bucket: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
    machines: Callable[[str], None], config_store: str, upload_server: Any,
) -> None:
    """A query is a snapshot each run; on a machine that never ran it, dlt's state and schema come back
    from the destination (a replace stays a replace of the same typed table) and an export needs nothing."""
    query = f"SELECT * FROM {source_schema}.visits ORDER BY id"
    to_table = make_connector("sql_database", {**reader, "query": query},
                              "postgres", {**warehouse, "schema": schema_name, "table_name": "visits",
                                           "write_disposition": "replace"}, name="query table")
    export = {**reader, "query": query, "csv_filename": "visits_{timestamp}.csv"}
    exports = {kind: make_connector("sql_database", export, kind,
                                    _destination(kind, s3_bucket, sftp_server, tmp_path, upload_server),
                                    name=f"query {kind}") for kind in ("nfs", "s3", "sftp")}
    for connector_id in (to_table, *exports.values()):
        run_connector_pipeline(connector_id)
    with psycopg.connect(config_store) as conn:
        expected = conn.execute(f"SELECT count(*) FROM {source_schema}.visits").fetchone()
        types = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                             "AND table_name = 'visits' ORDER BY ordinal_position", (schema_name,)).fetchall()
    machines("B")
    time.sleep(1.1)  # a new {timestamp} for the second exports
    again = run_connector_pipeline(to_table)
    assert again["rows_ingested"] == expected[0]  # type: ignore[index]
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema_name}.visits").fetchone() == expected
        assert conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                            "AND table_name = 'visits' ORDER BY ordinal_position", (schema_name,)).fetchall() == types
    for connector_id in exports.values():
        result = run_connector_pipeline(connector_id)
        assert result["status"] == "success" and len(result["metrics"]["files"]) == 1
    machines("C")  # a third machine inspects every one of them
    env = {**os.environ, "COLUMNS": "250"}
    for connector_id in (to_table, *exports.values()):
        shown = subprocess.run([CAI, "pipeline", str(connector_id), "info"], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
        assert shown.returncode == 0 and f"connector_{connector_id}_" in shown.stdout, shown.stdout + shown.stderr


def test_a_copy_killed_mid_run_on_one_machine_is_finished_once_on_another(
    make_connector: Callable[..., int], incoming: Path, sftp_server: dict[str, Any], tmp_path: Path,
    config_store: str,
) -> None:
    """`cai run` on machine A is killed (SIGKILL) while an upload hangs; machine B sends what A did not
    record as delivered, once, and closes A's record."""
    from tests.netfaults import stalling_sftp

    files = {"a_small.csv": b"id\n1\n" * 1000, "b_scan.bin": os.urandom(4 * 1024 * 1024)}
    for name, data in files.items():
        (incoming / name).write_bytes(data)
    folder = f"fleet-{tmp_path.name}"
    proxy, stalling = stalling_sftp(sftp_server, tmp_path, folder, cut_after=2 * 1024 * 1024)
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "copy"}, "sftp", stalling,
                                  name="killed on A")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    machine = {name: {**env, "CAI_HOME": str(tmp_path / name), "CAI_PIPELINES_DIR": str(tmp_path / name / "p")}
               for name in ("A", "B")}
    try:
        dying = subprocess.Popen([CAI, "run", str(connector_id)], env=machine["A"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        assert proxy.cut.wait(120), "the upload never started"
        time.sleep(0.5)
        dying.kill()
        dying.wait(30)
        with psycopg.connect(config_store) as conn:
            recorded = {row[0].rsplit("/", 1)[1] for row in conn.execute(
                "SELECT file_url FROM cai_delivered_files WHERE connector_id = %s", (connector_id,)).fetchall()}
        proxy.heal()
        done = subprocess.run([CAI, "run", str(connector_id)], env=machine["B"], capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        missing = len(files) - len(recorded)
        assert f"copied {missing} of {missing} file(s)" in done.stdout, (recorded, done.stdout)
        landed = sftp_server["root"] / folder
        assert {p.name: p.read_bytes() for p in landed.iterdir() if not p.name.startswith(".")} == files
        with psycopg.connect(config_store) as conn:
            statuses = [row[0] for row in conn.execute("SELECT status FROM cai_connector_runs WHERE connector_id = %s "
                                                       "ORDER BY id", (connector_id,)).fetchall()]
        assert statuses == ["failed", "success"]  # A's record closed by B, B's own
    finally:
        proxy.close()


def test_csv_loads_on_another_machine_load_nothing_twice(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], incoming: Path, warehouse: dict[str, Any],
    schema_name: str, config_store: str, machines: Callable[[str], None],
) -> None:
    fs, bucket = s3_bucket["fs"], s3_bucket["bucket"]
    for n in range(3):
        rows = b"".join(b"%d,%d.5\n" % (n * 10 + i, i) for i in range(10))
        fs.pipe(f"{bucket}/csv/labs_{n}.csv", b"id,value\n" + rows)
    source = {"bucket": bucket, "path": "csv", "file_pattern": "*.csv", **s3_bucket["credentials"]}
    appender = make_connector("s3", source, "postgres", {**warehouse, "schema": schema_name, "table_name": "labs"},
                              name="appender")
    (incoming / "patients.csv").write_text("mrn,name\n08123,Ana\n00501,Bo\n")
    merger = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                            "postgres", {**warehouse, "schema": schema_name, "write_disposition": "merge",
                                         "primary_key": "mrn"}, name="merger")
    assert run_connector_pipeline(appender)["rows_ingested"] == 30
    assert run_connector_pipeline(merger)["rows_ingested"] == 2
    machines("B")
    assert run_connector_pipeline(appender)["metrics"]["files_unchanged"] == 3
    assert run_connector_pipeline(merger)["metrics"]["files_unchanged"] == 1
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {schema_name}.labs").fetchone() == (30, 30)
        assert conn.execute(f"SELECT mrn FROM {schema_name}.patients ORDER BY mrn").fetchall() == [("00501",),
                                                                                                  ("08123",)]


CAI = str(Path(sys.executable).parent / "cai")


@pytest.mark.cli
@pytest.mark.parametrize("command", [["worker"], ["server"]])
def test_what_the_platform_runs_refuses_to_start_without_the_shared_store(command: list[str], tmp_path: Path) -> None:
    """No quiet embedded database inside a worker's container: one line naming `DATABASE_URL`, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CAI_HOME"] = str(tmp_path)
    done = subprocess.run([CAI, *command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) <= 2 and "needs `DATABASE_URL`" in " ".join(lines), lines
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "pgdata").exists()  # no embedded server was started


APPENDIX_A = """
CREATE TABLE cai_connector_runs (id SERIAL PRIMARY KEY, connector_id INTEGER NOT NULL, status VARCHAR(50) NOT NULL,
    prefect_flow_run_id VARCHAR(255), started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, rows_ingested INTEGER,
    log_summary TEXT);
CREATE TABLE cai_connectors (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, defined_source_id INTEGER,
    defined_destination_id INTEGER, source_config_override JSONB, destination_config_override JSONB);
INSERT INTO cai_connectors (name) VALUES ('made by the backend');
"""


def test_a_store_without_this_versions_schema_stops_the_run_at_start(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """A store the backend made from the spec's Appendix A only: the run stops saying `cai init-db`, and
    nothing is half-recorded. `cai init-db` then makes it current, and the doctor shows the version."""
    from flows.store.config_store import StoreOutdated, init_db, migrations

    with psycopg.connect(fresh_db) as conn:
        conn.execute(APPENDIX_A)
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    with pytest.raises(StoreOutdated, match="run `cai init-db` against it"):
        run_connector_pipeline(1)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM cai_connector_runs").fetchone() == (0,)

    env = {**os.environ, "DATABASE_URL": fresh_db, "CAI_HOME": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)
    before = subprocess.run([CAI, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert "config store schema" in before.stdout and "cai init-db" in before.stdout
    init_db(fresh_db)
    after = subprocess.run([CAI, "doctor"], env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                           timeout=120)
    latest = migrations()[-1][0]
    assert any("config store schema" in line and "OK" in line and latest in line for line in after.stdout.splitlines())
