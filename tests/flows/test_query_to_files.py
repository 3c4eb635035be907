"""A read-only query -> a CSV file in a folder or on S3, compared with what psql exports."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cai_common import ConnectorConfigError, ConnectorRunFailed, disk, progress
from dlt_sources.sql_database import SqlDatabaseSourceConfig, csv_file_name
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

AWKWARD_QUERY = ("SELECT id, name, note, amount, seen_at, active, born, payload, ref, stay "
                 "FROM {schema}.visits ORDER BY id")


def _psql_csv(url: str, query: str) -> bytes:
    """What `psql -c "\\copy (QUERY) to STDOUT csv header"` prints for the same query."""
    return subprocess.run(["psql", url, "-X", "-q", "-c", f"\\copy ({query}) to STDOUT csv header"],
                          capture_output=True, check=True).stdout


def _parsed(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def _only_final_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_export_to_a_folder_equals_psqls_csv(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, tmp_path: Path,
    config_store: str,
) -> None:
    query = AWKWARD_QUERY.format(schema=source_schema)
    out = tmp_path / "exports" / "daily"
    connector_id = make_connector(
        "sql_database", {**reader, "query": query, "csv_filename": "visits_{connector_id}.csv"},
        "nfs", {"path": str(out)},
    )
    result = run_connector_pipeline(connector_id)
    exported = (out / f"visits_{connector_id}.csv").read_bytes()
    expected = _psql_csv(config_store, query)
    assert _parsed(exported) == _parsed(expected)  # same rows and values, in order
    assert exported == expected  # and, as PostgreSQL formats both, the same bytes
    assert _parsed(exported)[0] == ["id", "name", "note", "amount", "seen_at", "active", "born", "payload", "ref",
                                    "stay"]
    assert result["rows_ingested"] == 5
    record = get_run(result["run_id"])
    assert record is not None
    assert record["metrics"]["files"] == [{"url": f"file://{out}/visits_{connector_id}.csv",
                                           "bytes": len(exported), "rows": 5,
                                           "sha256": hashlib.sha256(exported).hexdigest()}]
    assert record["metrics"]["bytes_written"] == len(exported)
    assert _only_final_files(out) == [f"visits_{connector_id}.csv"]


def test_export_to_s3_with_multipart_above_25_mb(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], s3_bucket: dict[str, Any], config_store: str,
) -> None:
    query = "SELECT g AS id, repeat(md5(g::text), 3) AS filler FROM generate_series(1, 300000) g"
    connector_id = make_connector(
        "sql_database", {**reader, "query": query, "csv_filename": "big_{date}.csv"},
        "minio", {"bucket": s3_bucket["bucket"], "prefix": "out/", "chunk_size_mb": 5, **s3_bucket["credentials"]},
    )
    result = run_connector_pipeline(connector_id)
    key = f"{s3_bucket['bucket']}/out/big_{datetime.now(UTC):%Y%m%d}.csv"
    fs = s3_bucket["fs"]
    info = fs.info(key)
    assert info["size"] > 25 * 1024 * 1024
    assert re.search(r"-\d+\"?$", info["ETag"]), f"not a multipart upload: {info['ETag']}"
    assert fs.cat_file(key) == _psql_csv(config_store, query)
    assert result["metrics"]["files"][0]["url"] == f"s3://{key}"
    assert s3_bucket["credentials"]["aws_secret_access_key"] not in str(get_run(result["run_id"]))


def test_an_export_goes_to_the_disk_while_postgres_writes_it_and_a_sync_error_fails_it_whole(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], tmp_path: Path,
    config_store: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = "SELECT g AS id, repeat(md5(g::text), 3) AS filler FROM generate_series(1, 40000) g"  # ~4 MB
    out = tmp_path / "out"
    connector_id = make_connector("sql_database", {**reader, "query": query, "csv_filename": "synced.csv"},
                                  "nfs", {"path": str(out)})
    synced: list[tuple[str, int]] = []  # (file, bytes it held) at each fdatasync
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))

    monkeypatch.setattr(disk, "FLUSH_STEP", 512 * 1024)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    moved: list[int] = []  # what a terminal's bar and the run's progress lines are fed
    with progress.watching(moved.append):
        run_connector_pipeline(connector_id)
    exported = (out / "synced.csv").read_bytes()
    assert exported == _psql_csv(config_store, query)
    # reported piece by piece while PostgreSQL wrote it (the folder's copy is a link: nothing more moves)
    assert sum(moved) == len(exported) and len(moved) >= 4, moved
    # the export's own file, synced in steps while PostgreSQL was still writing it
    early = [size for name, size in synced if name.endswith(".csv") and size < len(exported)]
    assert len(early) >= 3, synced

    (out / "synced.csv").unlink()

    def failing(fd: int) -> None:  # the disk reports a write error
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "Input/output error" in caught.value.result["log_summary"]
    assert _only_final_files(out) == []
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"


def test_placeholders_and_default_name() -> None:
    when = datetime(2024, 3, 1, 8, 15, 30, tzinfo=UTC)
    base = {"connection_string": "postgresql://u@h/db", "query": "SELECT 1"}
    named = SqlDatabaseSourceConfig.parse({**base, "csv_filename": "c{connector_id}/{date}/x_{timestamp}.csv"},
                                          connector_id=4, side="source")
    assert csv_file_name(named, 4, when) == "c4/20240301/x_20240301T081530Z.csv"
    default = SqlDatabaseSourceConfig.parse(base, connector_id=4, side="source")
    assert csv_file_name(default, 4, when) == "connector_4_20240301T081530Z.csv"
    for bad, problem in (("{patient}.csv", "may use only"), ("../escape.csv", "must be a relative path inside"),
                         ("/etc/cron.d/x.csv", "must be a relative path inside")):
        config = SqlDatabaseSourceConfig.parse({**base, "csv_filename": bad}, connector_id=4, side="source")
        with pytest.raises(ConnectorConfigError, match=rf"connector 4: source `csv_filename` {problem}"):
            csv_file_name(config, 4, when)


def test_a_query_failing_mid_stream_leaves_no_file(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], tmp_path: Path,
) -> None:
    query = "SELECT g, 1 / (g - 150000) AS boom FROM generate_series(1, 200000) g"
    connector_id = make_connector("sql_database", {**reader, "query": query, "csv_filename": "partial.csv"},
                                  "nfs", {"path": str(tmp_path / "out")})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "division by zero" in caught.value.result["log_summary"]
    assert not (tmp_path / "out").exists() or _only_final_files(tmp_path / "out") == []


def test_a_destination_that_fails_leaves_no_object_and_a_failed_record(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], s3_bucket: dict[str, Any],
) -> None:
    connector_id = make_connector(
        "sql_database", {**reader, "query": "SELECT 1 AS one", "csv_filename": "one.csv"},
        "s3", {"bucket": "no-such-bucket-here", **s3_bucket["credentials"]},
    )
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert "no-such-bucket-here" in record["log_summary"]
    assert not s3_bucket["fs"].exists("no-such-bucket-here/one.csv")


def test_a_non_select_writes_nothing(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, tmp_path: Path,
) -> None:
    connector_id = make_connector("sql_database", {**reader, "query": f"DROP TABLE {source_schema}.visits"},
                                  "nfs", {"path": str(tmp_path / "out")})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "source `query` must be a SELECT" in caught.value.result["log_summary"]
    assert not (tmp_path / "out").exists()


def _sftp_config(server: dict[str, Any], path: str, **auth: Any) -> dict[str, Any]:
    return {"host": server["host"], "port": server["port"], "path": path, "known_hosts": server["known_hosts"],
            **auth}


@pytest.mark.parametrize("auth", ["password", "key"])
def test_export_to_sftp_creates_directories_and_equals_psql(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, sftp_server: dict[str, Any],
    config_store: str, auth: str,
) -> None:
    login = ({"username": "loader", "password": "sftp-pass-123"} if auth == "password"
             else {"username": "keyuser", "pkey_path": sftp_server["client_key"]})
    query = AWKWARD_QUERY.format(schema=source_schema)
    connector_id = make_connector("sql_database", {**reader, "query": query, "csv_filename": f"{auth}.csv"},
                                  "truenas", _sftp_config(sftp_server, f"/pool/{auth}/incoming", **login))
    result = run_connector_pipeline(connector_id)
    landed = Path(sftp_server["root"]) / "pool" / auth / "incoming"
    assert (landed / f"{auth}.csv").read_bytes() == _psql_csv(config_store, query)
    assert _only_final_files(landed) == [f"{auth}.csv"]  # the temp name was renamed away
    assert result["metrics"]["files"][0]["url"].endswith(f"/pool/{auth}/incoming/{auth}.csv")
    assert "sftp-pass-123" not in str(get_run(result["run_id"]))


def test_sftp_refuses_an_unknown_host_key_and_accept_new_records_it(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], sftp_server: dict[str, Any], tmp_path: Path,
) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    login = {"username": "loader", "password": "sftp-pass-123", "known_hosts": str(empty_known_hosts)}
    refused = make_connector("sql_database", {**reader, "query": "SELECT 1 AS one", "csv_filename": "k.csv"},
                             "sftp", {**_sftp_config(sftp_server, "/refused"), **login})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(refused)
    assert "host key not trusted" in caught.value.result["log_summary"]
    assert not (Path(sftp_server["root"]) / "refused").exists()

    accepted = make_connector("sql_database", {**reader, "query": "SELECT 1 AS one", "csv_filename": "k.csv"},
                              "sftp", {**_sftp_config(sftp_server, "/accepted"), **login,
                                       "host_key_policy": "accept-new"})
    run_connector_pipeline(accepted)
    assert (Path(sftp_server["root"]) / "accepted" / "k.csv").read_text() == "one\n1\n"
    assert empty_known_hosts.read_text().strip() == sftp_server["host_line"]


def test_sftp_wrong_password_fails_without_leaking_it(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    connector_id = make_connector(
        "sql_database", {**reader, "query": "SELECT 1 AS one"},
        "sftp", _sftp_config(sftp_server, "/x", username="loader", password="Wr0ng-Secret!"),
    )
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "login refused for `loader`" in caught.value.result["log_summary"]
    assert "Wr0ng-Secret!" not in caught.value.result["log_summary"]


def test_an_sftp_upload_failing_mid_way_leaves_no_file_under_any_name(
    make_connector: Callable[..., int], warehouse: dict[str, Any], reader: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    query = "SELECT g, md5(g::text) FROM generate_series(1, 100000) g"  # about 4 MB of CSV
    connector_id = make_connector(
        "sql_database", {**reader, "query": query, "csv_filename": "big.csv"},
        "sftp", _sftp_config(sftp_server, "/full", username="flaky", password="sftp-pass-123"),
    )
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert "big.csv" in record["log_summary"]
    landed = Path(sftp_server["root"]) / "full"
    assert _only_final_files(landed) == []  # neither big.csv nor its temp name
