"""File transfers through run_connector_pipeline: S3 -> folder / S3 / SFTP, move and copy, verified."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _s3_source(s3: dict[str, Any], prefix: str = "in", **extra: Any) -> dict[str, Any]:
    return {"bucket": s3["bucket"], "path": prefix, "file_pattern": "**/*", **s3["credentials"], **extra}


def _fill(s3: dict[str, Any], files: dict[str, bytes]) -> None:
    for key, data in files.items():
        s3["fs"].pipe(f"{s3['bucket']}/{key}", data)


FILES = {"in/labs.csv": b"id,value\n1,2.5\n", "in/2024/q1/notes.txt": "Zoë's notes\n".encode(),
         "in/scan.bin": os.urandom(9 * 1024 * 1024)}  # above SFTP's 4 MB packet limit


def test_s3_to_folder_moves_verified_files_keeping_relative_paths(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], tmp_path: Path,
) -> None:
    _fill(s3_bucket, FILES)
    out = tmp_path / "nfs"
    connector_id = make_connector("s3", _s3_source(s3_bucket), "nfs", {"path": str(out)})
    result = run_connector_pipeline(connector_id)
    for key, data in FILES.items():
        assert (out / key.removeprefix("in/")).read_bytes() == data
        assert not s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/{key}")  # moved: source gone after verify
    files = {f["url"].rsplit("/", 1)[1]: f for f in result["metrics"]["files"]}
    assert files["scan.bin"]["status"] == "moved" and files["scan.bin"]["verified"] == "hash"
    assert files["scan.bin"]["sha256"] == hashlib.sha256(FILES["in/scan.bin"]).hexdigest()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["labs.csv", "notes.txt", "scan.bin"]
    assert "moved 3 of 3 file(s)" in result["log_summary"]


def test_s3_to_s3_copy_is_server_side_and_a_rerun_sends_nothing(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any],
) -> None:
    _fill(s3_bucket, FILES)
    fs, bucket = s3_bucket["fs"], s3_bucket["bucket"]
    connector_id = make_connector("minio", _s3_source(s3_bucket, transfer="copy"),
                                  "minio", {"bucket": bucket, "prefix": "archive/", **s3_bucket["credentials"]})
    first = run_connector_pipeline(connector_id)
    assert {f["verified"] for f in first["metrics"]["files"]} == {"size (server-side copy)"}
    for key, data in FILES.items():
        assert fs.cat_file(f"{bucket}/archive/{key.removeprefix('in/')}") == data
        assert fs.exists(f"{bucket}/{key}")  # copy keeps the source
    again = run_connector_pipeline(connector_id)
    assert again["metrics"]["files"] == [] and again["metrics"]["files_unchanged"] == 3
    _fill(s3_bucket, {"in/new.csv": b"id\n9\n"})
    third = run_connector_pipeline(connector_id)
    assert [f["file_url"].rsplit("/", 1)[1] for f in third["metrics"]["files"]] == ["new.csv"]


def test_s3_to_sftp_moves_files(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    _fill(s3_bucket, FILES)
    connector_id = make_connector(
        "s3", _s3_source(s3_bucket),
        "truenas", {"host": sftp_server["host"], "port": sftp_server["port"], "username": "loader",
                    "password": "sftp-pass-123", "path": "/pool/dropbox", "known_hosts": sftp_server["known_hosts"]},
    )
    result = run_connector_pipeline(connector_id)
    landed = Path(sftp_server["root"]) / "pool" / "dropbox"
    assert (landed / "2024" / "q1" / "notes.txt").read_bytes() == FILES["in/2024/q1/notes.txt"]
    assert (landed / "scan.bin").read_bytes() == FILES["in/scan.bin"]
    assert not s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/in/scan.bin")
    assert "sftp-pass-123" not in str(get_run(result["run_id"]))


def test_a_failed_upload_keeps_its_source_and_the_others_still_move(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    _fill(s3_bucket, FILES)  # scan.bin (9 MB) is too big for the `flaky` user's disk
    connector_id = make_connector(
        "s3", _s3_source(s3_bucket),
        "sftp", {"host": sftp_server["host"], "port": sftp_server["port"], "username": "flaky",
                 "password": "sftp-pass-123", "path": "/flaky-drop", "known_hosts": sftp_server["known_hosts"]},
    )
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert "scan.bin" in record["log_summary"] and "1 file(s) failed" in record["log_summary"]
    files = record["metrics"]["files"]
    statuses = {f["file_url"].rsplit("/", 1)[1]: (f["status"], bool(f.get("error"))) for f in files}
    assert statuses == {"scan.bin": ("failed", True), "labs.csv": ("moved", False), "notes.txt": ("moved", False)}
    landed = Path(sftp_server["root"]) / "flaky-drop"
    assert sorted(p.name for p in landed.rglob("*") if p.is_file()) == ["labs.csv", "notes.txt"]
    assert s3_bucket["fs"].cat_file(f"{s3_bucket['bucket']}/in/scan.bin") == FILES["in/scan.bin"]
    assert not s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/in/labs.csv")


def test_s3_to_rest_uploads_each_file_as_multipart_and_moves_it(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], upload_server: Any,
) -> None:
    _fill(s3_bucket, FILES)
    connector_id = make_connector(
        "s3", _s3_source(s3_bucket),
        "rest_api", {"url": upload_server.url, "auth_type": "bearer_token", "token": "tok-secret-77",
                     "additional_fields": {"projectName": "PROJ1"}},
    )
    result = run_connector_pipeline(connector_id)
    sent = {u["files"]["file"][0]: u for u in upload_server.uploads}
    assert sorted(sent) == ["2024/q1/notes.txt", "labs.csv", "scan.bin"]
    for key, data in FILES.items():
        upload = sent[key.removeprefix("in/")]
        assert upload["files"]["file"][2] == data and upload["form"] == {"projectName": "PROJ1"}
        assert upload["headers"]["Authorization"] == "Bearer tok-secret-77"
        assert not s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/{key}")  # moved after a 2xx
    files = {f["file_url"].rsplit("/", 1)[1]: f for f in result["metrics"]["files"]}
    assert files["scan.bin"]["status"] == "moved" and files["scan.bin"]["verified"] == "size, HTTP 201"
    assert files["scan.bin"]["sha256"] == hashlib.sha256(FILES["in/scan.bin"]).hexdigest()
    assert "moved 3 of 3 file(s)" in result["log_summary"]
    assert "tok-secret-77" not in str(result)


def test_a_file_sent_again_to_rest_carries_the_same_idempotency_key_and_a_changed_one_a_new_key(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], upload_server: Any,
) -> None:
    _fill(s3_bucket, {"in/labs.csv": b"id\n1\n"})
    # copy with full_refresh sends every file on every run: as a run does after one that died between
    # the endpoint's 2xx and noting it
    connector_id = make_connector("s3", _s3_source(s3_bucket, transfer="copy", full_refresh=True),
                                  "rest_api", {"url": upload_server.url})
    first = run_connector_pipeline(connector_id)
    run_connector_pipeline(connector_id)
    _fill(s3_bucket, {"in/labs.csv": b"id\n2\n"})  # a new version, the same size
    run_connector_pipeline(connector_id)
    keys = [u["headers"]["Idempotency-Key"] for u in upload_server.uploads]
    [sent] = first["metrics"]["files"]
    assert keys[0] == keys[1] == f'"{sent["idempotency_key"]}"' and keys[2] != keys[0]
    assert [u["files"]["file"][2] for u in upload_server.uploads] == [b"id\n1\n", b"id\n1\n", b"id\n2\n"]


def test_s3_to_rest_failing_server_keeps_every_source_and_fails_the_run(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], upload_server: Any,
) -> None:
    _fill(s3_bucket, {"in/a.csv": b"id\n1\n", "in/b.csv": b"id\n2\n"})
    upload_server.answers = [(503, {})] * 3 + [(403, {})]  # a.csv: 3 x 503; b.csv: 403 at once
    connector_id = make_connector(
        "s3", _s3_source(s3_bucket),
        "rest_api", {"url": upload_server.url, "use_multipart": False, "retry_backoff_seconds": 0.01},
    )
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed" and "2 file(s) failed" in record["log_summary"]
    errors = {f["file_url"].rsplit("/", 1)[1]: f["error"] for f in record["metrics"]["files"]}
    assert "failed after 3 attempts" in errors["a.csv"] and "HTTP 403" in errors["b.csv"]
    assert len(upload_server.uploads) == 4
    assert s3_bucket["fs"].cat_file(f"{s3_bucket['bucket']}/in/a.csv") == b"id\n1\n"
    assert s3_bucket["fs"].cat_file(f"{s3_bucket['bucket']}/in/b.csv") == b"id\n2\n"


def _sftp(sftp_server: dict[str, Any], user: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"host": sftp_server["host"], "port": sftp_server["port"], "username": user,
            "password": "sftp-pass-123", "path": path, "known_hosts": sftp_server["known_hosts"], **extra}


def test_an_sftp_server_that_cannot_rename_is_named_and_atomic_rename_false_writes_in_place(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    _fill(s3_bucket, {"in/a.csv": b"id\n1\n"})
    landed = Path(sftp_server["root"]) / "gateway"
    refused = make_connector("s3", _s3_source(s3_bucket), "sftp", _sftp(sftp_server, "norename", "/gateway"))
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(refused)
    [failure] = caught.value.result["metrics"]["files"]
    assert "RenameUnsupported" in failure["error"] and '"atomic_rename": false' in failure["error"]
    assert [p.name for p in landed.iterdir()] == []  # neither the temp file nor a final one
    assert s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/in/a.csv")
    in_place = make_connector("s3", _s3_source(s3_bucket), "sftp",
                              _sftp(sftp_server, "norename", "/gateway", atomic_rename=False))
    result = run_connector_pipeline(in_place)
    assert (landed / "a.csv").read_bytes() == b"id\n1\n" and result["metrics"]["files"][0]["status"] == "moved"


def test_an_sftp_server_without_posix_rename_gets_a_plain_rename_replacing_the_old_file(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    landed = Path(sftp_server["root"]) / "v3"
    landed.mkdir()
    (landed / "a.csv").write_bytes(b"old\n")
    _fill(s3_bucket, {"in/a.csv": b"id\n1\n"})
    connector_id = make_connector("s3", _s3_source(s3_bucket), "sftp", _sftp(sftp_server, "plainrename", "/v3"))
    run_connector_pipeline(connector_id)
    assert [p.name for p in landed.iterdir()] == ["a.csv"] and (landed / "a.csv").read_bytes() == b"id\n1\n"


def test_object_keys_escaping_the_destination_root_are_refused_and_kept(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], tmp_path: Path,
) -> None:
    import boto3

    creds = s3_bucket["credentials"]
    client = boto3.client("s3", endpoint_url=creds["endpoint_url"], aws_access_key_id=creds["aws_access_key_id"],
                          aws_secret_access_key=creds["aws_secret_access_key"], region_name="us-east-1")
    for key in ("in/../../escape.csv", "in/ok.csv"):  # boto3 sends keys as they are
        client.put_object(Bucket=s3_bucket["bucket"], Key=key, Body=b"id\n1\n")
    out = tmp_path / "deep" / "nfs"
    connector_id = make_connector("s3", _s3_source(s3_bucket), "nfs", {"path": str(out)})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    results = {f["file_url"].split("/in/", 1)[1]: f for f in caught.value.result["metrics"]["files"]}
    assert results["ok.csv"]["status"] == "moved"
    bad = results["../../escape.csv"]
    assert bad["status"] == "failed" and "UnsafePathError" in bad["error"] and "would escape" in bad["error"]
    assert client.get_object(Bucket=s3_bucket["bucket"], Key="in/../../escape.csv")["Body"].read() == b"id\n1\n"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == ["deep/nfs/ok.csv"]


@pytest.mark.parametrize("endpoint", ["same", "other"])
def test_s3_to_s3_move_server_side_or_streamed_multipart(
    make_connector: Callable[..., int], s3_bucket: dict[str, Any], endpoint: str,
) -> None:
    big = os.urandom(27 * 1024 * 1024)  # above the 25 MB multipart threshold
    _fill(s3_bucket, {"in/big.bin": big, "in/labs.csv": FILES["in/labs.csv"]})
    fs, bucket, creds = s3_bucket["fs"], s3_bucket["bucket"], dict(s3_bucket["credentials"])
    if endpoint == "other":  # the same moto server under another name: no server-side copy possible
        creds["endpoint_url"] = creds["endpoint_url"].replace("127.0.0.1", "localhost")
    connector_id = make_connector("s3", _s3_source(s3_bucket),
                                  "s3", {"bucket": bucket, "prefix": "archive", "chunk_size_mb": 5, **creds})
    result = run_connector_pipeline(connector_id)
    files = {f["file_url"].rsplit("/", 1)[1]: f for f in result["metrics"]["files"]}
    assert {f["status"] for f in files.values()} == {"moved"}
    assert fs.cat_file(f"{bucket}/archive/big.bin") == big and not fs.exists(f"{bucket}/in/big.bin")
    if endpoint == "same":
        assert files["big.bin"]["verified"] == "size (server-side copy)"
    else:
        assert files["big.bin"]["verified"] == "hash"
        assert files["big.bin"]["sha256"] == hashlib.sha256(big).hexdigest()
        etag = fs.info(f"{bucket}/archive/big.bin")["ETag"].strip('"')
        assert etag.endswith("-6")  # a multipart upload of six 5 MB parts


def test_an_s3_read_leaves_httpx_unloaded_and_importable(s3_bucket: dict[str, Any]) -> None:
    """aiobotocore imports httpx (6 MB with rich and click) wherever it is installed; every S3 client here
    talks through aiohttp, so a process without httpx reads S3 without loading it (bench/transfer.py:
    S3 -> folder 132 -> 126 MB). Checked in a fresh process that reads an object from a real S3 server;
    httpx still imports afterwards, for whatever else needs it."""
    import subprocess
    import sys

    s3_bucket["fs"].pipe_file(f"{s3_bucket['bucket']}/in/x.bin", b"abc" * 1000)
    code = ("import json, sys\n"
            "from dlt_destinations.s3.credentials import S3Credentials\n"
            "fs = S3Credentials.model_validate(json.loads(sys.argv[1])).filesystem()\n"
            "data = fs.open_stream(sys.argv[2]).read(1 << 20)\n"
            "print(len(data), 'httpx' in sys.modules)\n"
            "import httpx\n"
            "print(httpx.Client.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(s3_bucket["credentials"]),
                           f"{s3_bucket['bucket']}/in/x.bin"], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split() == ["3000", "False", "Client"], done.stdout + done.stderr


def test_a_transfer_process_never_imports_the_csv_or_query_readers() -> None:
    """pyarrow, connectorx and polars cost about 65 MB of a transfer's 200 MB budget (bench/transfer.py)."""
    import subprocess
    import sys

    code = ("import sys, flows.dlt_pipeline_flow, flows.paths.transfers; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'connectorx', 'polars'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
