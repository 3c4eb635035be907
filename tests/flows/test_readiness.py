"""Fault suite: a producer still writing the file a run finds. Nothing is lost, nothing lands twice, nothing
half-written appears under a final name, and the run after the producer finishes delivers the whole file once.

The producer is a process of its own, as a modality or an export job is: it appends a piece, flushes, sleeps,
and appends the next, from a payload written beforehand (random bytes, or psql's own CSV export of a source
table). Loaded rows are compared with that table in SQL.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run
from tests.corpus import mismatches, psql_copy_out

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

PRODUCER = """
import sys, time
payload, target, piece, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(payload, "rb") as src, open(target, "ab") as out:
    while chunk := src.read(piece):
        out.write(chunk)
        out.flush()
        time.sleep(pause)
"""


class Producer:
    """Another system writing ``target`` from ``payload``: ``piece`` bytes every ``pause`` seconds."""

    def __init__(self, payload: Path, target: Path, piece: int = 64 * 1024, pause: float = 0.1) -> None:
        self.payload, self.target = payload, target
        self.process = subprocess.Popen([sys.executable, "-c", PRODUCER, str(payload), str(target), str(piece),
                                         str(pause)])

    def writing(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> None:
        assert self.process.wait(timeout=120) == 0
        assert self.target.read_bytes()[-64:] == self.payload.read_bytes()[-64:]


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Path]]:
    made = {name: tmp_path / name for name in ("payloads", "landing", "archive")}
    for folder in made.values():
        folder.mkdir()
    yield made


def _payload(folders: dict[str, Path], size: int = 80 * 64 * 1024) -> Path:
    path = folders["payloads"] / "growing.dcm"
    path.write_bytes(os.urandom(size))
    return path


def _started(payload: Path, target: Path, **pace: Any) -> Producer:
    producer = Producer(payload, target, **pace)
    deadline = time.monotonic() + 10
    while not (target.exists() and target.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # the run starts a second into the write, as in the report that found it
    assert producer.writing() and 0 < target.stat().st_size < payload.stat().st_size
    return producer


def _names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("transfer", ["move", "copy"])
def test_a_file_being_written_is_left_alone_and_the_next_run_delivers_it_whole_once(
    make_connector: Callable[..., int], folders: dict[str, Path], transfer: str,
) -> None:
    payload = _payload(folders)
    source = folders["landing"] / "growing.dcm"
    connector_id = make_connector(
        "filesystem", {"path": str(folders["landing"]), "file_pattern": "*.dcm", "transfer": transfer,
                       "settle_seconds": 2}, "nfs", {"path": str(folders["archive"])})
    producer = _started(payload, source)

    during = run_connector_pipeline(connector_id)
    assert producer.writing()
    assert during["status"] == "success"
    assert during["metrics"]["files_not_ready"] == 1
    assert during["metrics"]["not_ready"][0]["file_url"].endswith("/landing/growing.dcm")
    assert during["metrics"]["not_ready"][0]["reason"].startswith("still being written")
    assert "1 file(s) not ready (still being written), left for the next run" in during["log_summary"]
    assert _names(folders["archive"]) == []  # no half file, no temp file
    assert source.exists()

    producer.finish()
    after = run_connector_pipeline(connector_id)  # the file settles within this run's wait
    assert after["metrics"]["files_not_ready"] == 0
    assert [f["status"] for f in after["metrics"]["files"]] == ["moved" if transfer == "move" else "copied"]
    assert _names(folders["archive"]) == ["growing.dcm"]
    assert _sha(folders["archive"] / "growing.dcm") == _sha(payload)
    assert source.exists() == (transfer == "copy")

    again = run_connector_pipeline(connector_id)
    assert again["metrics"]["files"] == []
    if transfer == "copy":
        assert again["metrics"]["files_unchanged"] == 1


@pytest.mark.parametrize("transfer", ["move", "copy"])
def test_with_readiness_off_a_file_that_changes_during_its_copy_is_discarded_and_its_source_kept(
    make_connector: Callable[..., int], folders: dict[str, Path], transfer: str,
) -> None:
    """`settle_seconds: 0` takes the file at once; the check around the copy still holds (it cannot be turned off)."""
    payload = _payload(folders, 48 * 1024 * 1024)  # about 7 s of writing, a piece every 10 ms
    source = folders["landing"] / "growing.dcm"
    connector_id = make_connector(
        "filesystem", {"path": str(folders["landing"]), "file_pattern": "*.dcm", "transfer": transfer,
                       "settle_seconds": 0}, "nfs", {"path": str(folders["archive"])})
    producer = _started(payload, source, piece=64 * 1024, pause=0.01)

    during = run_connector_pipeline(connector_id)
    assert producer.writing()
    (result,) = during["metrics"]["files"]
    assert result["status"] == "changed", result
    assert "while it was read: a producer is still writing it" in result["error"]
    assert during["status"] == "success" and during["metrics"]["files_not_ready"] == 1
    assert "changed while they were copied" in during["log_summary"]
    assert _names(folders["archive"]) == []
    assert source.exists()

    producer.finish()
    after = run_connector_pipeline(connector_id)
    assert [f["status"] for f in after["metrics"]["files"]] == ["moved" if transfer == "move" else "copied"]
    assert _sha(folders["archive"] / "growing.dcm") == _sha(payload)
    assert source.exists() == (transfer == "copy")


def test_the_worker_default_settles_folder_files_when_the_source_says_nothing(
    make_connector: Callable[..., int], folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No `settle_seconds` in the config and no `CAI_SETTLE_SECONDS` on the worker: 5 s on a folder."""
    monkeypatch.delenv("CAI_SETTLE_SECONDS")
    payload = _payload(folders, 140 * 64 * 1024)  # 14 s of writing: longer than a run that waits 5 s
    source = folders["landing"] / "growing.dcm"
    connector_id = make_connector("filesystem", {"path": str(folders["landing"]), "file_pattern": "*.dcm"},
                                  "nfs", {"path": str(folders["archive"])})
    producer = _started(payload, source)
    during = run_connector_pipeline(connector_id)
    assert during["metrics"]["not_ready"][0]["reason"].startswith("still being written")
    assert "within 5 s" in during["metrics"]["not_ready"][0]["reason"]
    assert _names(folders["archive"]) == [] and source.exists()
    producer.finish()
    run_connector_pipeline(connector_id)
    assert _sha(folders["archive"] / "growing.dcm") == _sha(payload) and not source.exists()


@pytest.fixture
def labs(config_store: str, folders: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """A source table of lab results (leading-zero MRNs, fractional-second timestamps with offsets, exact
    decimals, NULLs) and psql's CSV export of its first 20,000 rows and of the next 5,000 (no header)."""
    schema = f"src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(config_store, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"""CREATE TABLE {schema}.labs AS SELECT i AS id, lpad((i * 7919 % 100000)::text, 8, '0') AS mrn,
            timestamptz '2024-03-01 08:15:42.123456+00' + i * interval '1 minute 0.000001 s' AS taken_at,
            CASE WHEN i % 7 = 0 THEN NULL ELSE round(i / 13.0, 6) END AS value,
            CASE WHEN i % 5 = 0 THEN '' ELSE 'K+ "stat", line ' || i END AS note
            FROM generate_series(1, 25000) i""")
    first = psql_copy_out(config_store, f"SELECT * FROM {schema}.labs WHERE id <= 20000 ORDER BY id",
                          folders["payloads"] / "labs.csv")
    later = folders["payloads"] / "more.csv"
    psql_copy_out(config_store, f"SELECT * FROM {schema}.labs WHERE id > 20000 ORDER BY id", later)
    rest = later.read_bytes().split(b"\n", 1)[1]  # the producer appends rows, not a second header
    later.write_bytes(rest)
    try:
        yield {"schema": schema, "csv": folders["payloads"] / "labs.csv", "size": len(first), "more": later}
    finally:
        with psycopg.connect(config_store, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_a_csv_being_written_is_not_loaded_until_whole_and_a_grown_one_never_appends_twice(
    make_connector: Callable[..., int], folders: dict[str, Path], labs: dict[str, Any], warehouse: dict[str, Any],
    schema_name: str, config_store: str,
) -> None:
    landing = folders["landing"] / "labs.csv"
    connector_id = make_connector(
        "filesystem", {"path": str(folders["landing"]), "file_pattern": "*.csv", "settle_seconds": 1.5},
        "postgres", {**warehouse, "schema": schema_name, "write_disposition": "append"})
    loaded = f"{schema_name}.labs"
    producer = _started(labs["csv"], landing, piece=16 * 1024, pause=0.1)  # about 10 s of writing

    during = run_connector_pipeline(connector_id)
    assert producer.writing()
    assert during["status"] == "success" and during["rows_ingested"] == 0
    assert during["metrics"]["files_not_ready"] == 1
    assert "nothing loaded from `*.csv`" in during["log_summary"] and "not ready" in during["log_summary"]
    assert _count(config_store, loaded) == 0

    producer.finish()
    after = run_connector_pipeline(connector_id)
    assert after["rows_ingested"] == 20000
    columns = ["mrn", "taken_at", "value", "note"]
    source = f"(SELECT * FROM {labs['schema']}.labs WHERE id <= 20000)"
    assert mismatches(config_store, loaded, source, columns) == []
    assert run_connector_pipeline(connector_id)["metrics"]["files_unchanged"] == 1

    # The producer writes to the file again: under `append` the 20,000 rows it held must not land again.
    with open(landing, "ab") as out:
        out.write(labs["more"].read_bytes())
    time.sleep(1.6)
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert "labs.csv`: was loaded before" in record["log_summary"]
    assert "`write_disposition` `append`" in record["log_summary"]
    assert _count(config_store, loaded) == 20000
    assert mismatches(config_store, loaded, source, columns) == []


def test_markers_per_file_and_per_folder(
    make_connector: Callable[..., int], folders: dict[str, Path],
) -> None:
    landing, archive = folders["landing"], folders["archive"]
    (landing / "a.dcm").write_bytes(b"study a")
    (landing / "a.dcm.done").write_bytes(b"")
    (landing / "b scan #2.dcm").write_bytes(b"study b, still coming")
    connector_id = make_connector("filesystem", {"path": str(landing), "ready_marker": "{name}.done"},
                                  "nfs", {"path": str(archive)})
    first = run_connector_pipeline(connector_id)
    assert [(f["url"].rsplit("/", 1)[1], f["status"]) for f in first["metrics"]["files"]] == [("a.dcm", "moved")]
    assert first["metrics"]["not_ready"] == [{"file_url": (landing / "b scan #2.dcm").as_uri(),
                                              "reason": "waiting for its ready marker `b scan #2.dcm.done`"}]
    assert _names(archive) == ["a.dcm"]  # markers are never transferred
    assert _names(landing) == ["b scan #2.dcm"]  # a moved file's own marker goes with it

    (landing / "b scan #2.dcm.done").write_bytes(b"")
    run_connector_pipeline(connector_id)
    assert _names(archive) == ["a.dcm", "b scan #2.dcm"] and _names(landing) == []

    # A folder marker speaks for the files written before it: a file modified after it waits for the next.
    batch = folders["payloads"] / "batch"
    batch.mkdir()
    (batch / "_SUCCESS").write_bytes(b"")
    (batch / "c.dcm").write_bytes(b"study c")
    old = time.time() - 60
    os.utime(batch / "_SUCCESS", (old, old))
    folder_id = make_connector("filesystem", {"path": str(batch), "ready_marker": "_SUCCESS"},
                               "nfs", {"path": str(archive / "batch")}, name="batch connector")
    stale = run_connector_pipeline(folder_id)
    assert stale["metrics"]["files"] == []
    assert stale["metrics"]["not_ready"][0]["reason"] == "modified after its ready marker `_SUCCESS` was written"
    (batch / "_SUCCESS").touch()
    done = run_connector_pipeline(folder_id)
    assert [f["status"] for f in done["metrics"]["files"]] == ["moved"]
    assert _names(batch) == ["_SUCCESS"]  # a folder marker stays: the producer owns it


def test_an_s3_upload_still_in_progress_is_not_taken_and_lands_whole_once_complete(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], folders: dict[str, Path],
) -> None:
    import boto3

    creds = s3_bucket["credentials"]
    client = boto3.client("s3", endpoint_url=creds["endpoint_url"], aws_access_key_id=creds["aws_access_key_id"],
                          aws_secret_access_key=creds["aws_secret_access_key"], region_name="us-east-1")
    bucket, key = s3_bucket["bucket"], "in/study.dcm"
    parts_data = [os.urandom(5 * 1024 * 1024), os.urandom(1024 * 1024)]
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                              Body=parts_data[0])["ETag"]
    connector_id = make_connector("s3", {"bucket": bucket, "path": "in", "file_pattern": "*.dcm", **creds},
                                  "nfs", {"path": str(folders["archive"])})
    during = run_connector_pipeline(connector_id)
    assert during["status"] == "success" and during["metrics"]["files"] == []
    assert _names(folders["archive"]) == []

    second = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=2,
                                Body=parts_data[1])["ETag"]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"ETag": etag, "PartNumber": 1}, {"ETag": second, "PartNumber": 2}]})
    after = run_connector_pipeline(connector_id)
    assert [f["status"] for f in after["metrics"]["files"]] == ["moved"]
    assert (folders["archive"] / "study.dcm").read_bytes() == b"".join(parts_data)
    assert not s3_bucket["fs"].exists(f"{bucket}/{key}")
