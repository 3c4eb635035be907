"""A fleet, not one machine: the same connector's next run lands on another worker with an empty disk.

Each "machine" is its own `CAI_HOME` and pipelines directory; the two share only `DATABASE_URL`, as
two worker pods with `emptyDir` volumes do. What a run remembers must come back on the other one:
copy transfers' delivered files from the config store (`cai_delivered_files`), CSV ledgers and dlt's
state and schema from the PostgreSQL destination.
"""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("destination", ["nfs", "s3", "sftp"])
def test_a_copy_to_files_on_another_machine_sends_nothing_again(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
    machines: Callable[[str], None], destination: str,
) -> None:
    _fill(s3_bucket)
    config = {
        "nfs": {"path": str(tmp_path / "archive")},
        "s3": {"bucket": s3_bucket["bucket"], "prefix": "archive", **s3_bucket["credentials"]},
        "sftp": {"host": sftp_server["host"], "port": sftp_server["port"], "username": "loader",
                 "password": "sftp-pass-123", "path": f"/{tmp_path.name}", "known_hosts": sftp_server["known_hosts"]},
    }[destination]
    connector_id = make_connector("s3", _s3_source(s3_bucket), destination, config)
    _copies_once_across_machines(connector_id, machines)


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
