"""The fault suite: what operators meet (redirecting endpoints, ...) on real services; nothing lost."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cai_common import ConnectorRunFailed
from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store.run_records import get_run
from tests.netfaults import CuttingProxy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_an_upload_endpoint_that_redirects_fails_the_file_and_keeps_the_source(
    make_connector: Callable[..., int], incoming: Path, upload_server: Any, status: int,
) -> None:
    """requests would follow a 302/303 with a GET (whose 200 says nothing) and resend on 307: none is followed."""
    (incoming / "labs.csv").write_bytes(b"id,value\n1,2.5\n")
    upload_server.answers = [(status, {"Location": "/landing"})] * 3
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": "move"},
                                  "rest_api", {"url": upload_server.url, "retry_backoff_seconds": 0.01})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    summary = caught.value.result["log_summary"]
    assert f"answered HTTP {status}" in summary and "redirecting to `/landing`" in summary, summary
    assert (incoming / "labs.csv").read_bytes() == b"id,value\n1,2.5\n"  # the source stays
    assert [u["path"] for u in upload_server.uploads] == ["/upload"]  # sent once, nothing followed
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    assert [f["status"] for f in record["metrics"]["files"]] == ["failed"]


def _hashed(name: str) -> str:
    """An OpenSSH hashed known_hosts name (`ssh-keygen -H`): |1|salt|HMAC-SHA1(salt, name)."""
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _accept_new(sftp_server: dict[str, Any], known_hosts: Path) -> Any:
    """The asyncssh server's `loader` login with `host_key_policy: accept-new` and this known_hosts."""
    from dlt_destinations.sftp import SftpDestinationConfig

    return SftpDestinationConfig.model_validate({
        "host": sftp_server["host"], "port": sftp_server["port"], "username": "loader",
        "password": "sftp-pass-123", "path": "/keys", "known_hosts": str(known_hosts),
        "host_key_policy": "accept-new"})


@pytest.mark.parametrize("entry", ["plain", "hashed", "multi-name"])
def test_a_changed_host_key_is_refused_under_every_known_hosts_form(
    sftp_server: dict[str, Any], tmp_path: Path, entry: str,
) -> None:
    """accept-new records keys only for hosts with none on record; a changed key is refused, as OpenSSH does."""
    import asyncssh

    from dlt_destinations.sftp.client import HostKeyRefused, open_sftp

    name = f"[{sftp_server['host']}]:{sftp_server['port']}"
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    names = {"plain": name, "hashed": _hashed(name), "multi-name": f"nas.example,{name},10.9.9.9"}[entry]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"# the NAS\n{names} {other_key}\n")
    config = _accept_new(sftp_server, known_hosts)
    with pytest.raises(HostKeyRefused) as caught:
        open_sftp(config)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in str(caught.value)
    assert f"`{known_hosts}` (line 2)" in str(caught.value) and "remove the old entry" in str(caught.value)
    assert "accept-new`" not in str(caught.value).split("remove the old entry")[0]
    assert known_hosts.read_text() == f"# the NAS\n{names} {other_key}\n"  # nothing appended


def test_accept_new_finds_a_hashed_entry_and_appends_nothing(sftp_server: dict[str, Any], tmp_path: Path) -> None:
    from dlt_destinations.sftp.client import open_sftp

    name = f"[{sftp_server['host']}]:{sftp_server['port']}"
    key = sftp_server["host_line"].split(" ", 1)[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{_hashed(name)} {key}\n")
    config = _accept_new(sftp_server, known_hosts)
    before = known_hosts.read_text()
    fs = open_sftp(config)  # the key on record (hashed) is the server's: the login works
    fs.makedirs("/keys", exist_ok=True)
    assert known_hosts.read_text() == before  # and nothing is appended


@pytest.mark.parametrize("query", [
    "SELECT id, name FROM {s}.visits ORDER BY id -- the nightly extract",
    "TABLE {s}.visits",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT id FROM {s}.visits ORDER BY id USING >;",
])
def test_every_read_only_form_exports_and_loads(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], source_schema: str, schema_name: str,
    tmp_path: Path, query: str,
) -> None:
    query = query.format(s=source_schema)
    exported = make_connector("postgres", {**reader, "query": query, "csv_filename": "out.csv"},
                              "nfs", {"path": str(tmp_path / "out")})
    copied = make_connector("postgres", {**reader, "query": query},
                            "postgres", {**warehouse, "schema": schema_name, "table_name": "copied"})
    rows = run_connector_pipeline(exported)["rows_ingested"]
    assert rows in (2, 5) and (tmp_path / "out" / "out.csv").read_text().count("\n") >= rows + 1
    assert run_connector_pipeline(copied)["rows_ingested"] == rows


def test_a_query_calling_lo_export_is_refused_before_it_reaches_the_server(
    make_connector: Callable[..., int], warehouse: dict[str, Any],
    reader: dict[str, Any], schema_name: str, tmp_path: Path,
) -> None:
    target = f"/tmp/cai-lo-export-{schema_name}"
    connector_id = make_connector(
        "postgres", {**reader, "query": f"SELECT lo_export(lo_from_bytea(0, 'x'), '{target}')"},
        "nfs", {"path": str(tmp_path / "out")})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    assert "must only read, but calls `lo_export`" in caught.value.result["log_summary"]
    assert not Path(target).exists() and not (tmp_path / "out").exists()


def test_a_superuser_source_login_is_refused_unless_allowed(
    make_connector: Callable[..., int], warehouse: dict[str, Any], tmp_path: Path,
) -> None:
    refused = make_connector("postgres", {**warehouse, "query": "SELECT 1 AS one", "csv_filename": "one.csv"},
                             "nfs", {"path": str(tmp_path / "out")})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(refused)
    summary = caught.value.result["log_summary"]
    assert "source login `postgres` is a superuser" in summary and '"allow_superuser": true' in summary
    assert not (tmp_path / "out").exists()
    allowed = make_connector("postgres", {**warehouse, "allow_superuser": True, "query": "SELECT 1 AS one",
                                          "csv_filename": "one.csv"}, "nfs", {"path": str(tmp_path / "out")})
    assert run_connector_pipeline(allowed)["rows_ingested"] == 1


def test_a_missing_source_location_fails_naming_it_and_an_empty_one_succeeds(
    make_connector: Callable[..., int], warehouse: dict[str, Any], schema_name: str, tmp_path: Path,
    s3_bucket: dict[str, Any],
) -> None:
    missing = tmp_path / "unmounted" / "share"
    for destination, config in (("postgres", {**warehouse, "schema": schema_name}),
                                ("nfs", {"path": str(tmp_path / "out")})):
        connector_id = make_connector("filesystem", {"path": str(missing)}, destination, config)
        with pytest.raises(ConnectorRunFailed) as caught:
            run_connector_pipeline(connector_id)
        assert (f"connector {connector_id}: source `path` `{missing}` does not exist (an unmounted share?)"
                in caught.value.result["log_summary"])
    no_bucket = make_connector("s3", {"bucket": "no-such-bucket-here", **s3_bucket["credentials"]},
                               "nfs", {"path": str(tmp_path / "out")})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(no_bucket)
    assert "source `bucket` `no-such-bucket-here` does not exist" in caught.value.result["log_summary"]

    empty = tmp_path / "empty"
    empty.mkdir()
    connector_id = make_connector("filesystem", {"path": str(empty), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    result = run_connector_pipeline(connector_id)
    assert result["status"] == "success" and "no files matched" in result["log_summary"]


def files_holding(folder: Path, secrets: list[str]) -> list[str]:
    """Files under ``folder`` whose bytes hold any of the secrets (SQLite, logs, dlt state and traces)."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_secrets_a_server_echoes_back_appear_nowhere(
    make_connector: Callable[..., int], incoming: Path, httpserver: Any, config_store: str,
) -> None:
    """An upload endpoint that refuses with the request's own headers in its body (servers do)."""
    import json

    import prefect.settings
    from werkzeug import Request, Response

    from tests.flows.test_cli import CAI

    def echo(request: Request) -> Response:
        return Response(json.dumps(dict(request.headers)), status=403)

    httpserver.expect_request("/upload").respond_with_handler(echo)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    secrets = ["pw-basic-4471", "c3ZjLXVwbG9hZDpwdy1iYXNpYy00NDcx", "session-token-8812"]  # base64 of user:pw
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)}, "rest_api",
        {"url": httpserver.url_for("/upload"), "auth_type": "basic", "username": "svc-upload",
         "password": "pw-basic-4471", "headers": {"X-Session": "session-token-8812"}})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    outputs = [json.dumps(caught.value.result, default=str)]
    record = get_run(caught.value.result["run_id"])
    outputs.append(json.dumps(record, default=str))
    assert "HTTP 403" in caught.value.result["log_summary"] and "***" in caught.value.result["log_summary"]
    env = {**os.environ, "DATABASE_URL": config_store, "COLUMNS": "400"}
    runs = subprocess.run([CAI, "runs", "--connector", str(connector_id)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    outputs.append(runs.stdout + runs.stderr)
    for output in outputs:
        for secret in secrets:
            assert secret not in output, f"`{secret}` leaked into: {output[:300]}"
    prefect_db = Path(prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1]).parent
    assert files_holding(prefect_db, secrets) == []  # flow and task logs, artifacts, states
    assert files_holding(Path(os.environ["CAI_PIPELINES_DIR"]), secrets) == []


@pytest.mark.parametrize("atomic_rename", [True, False])
def test_an_sftp_link_cut_mid_file_leaves_nothing_and_the_source(
    make_connector: Callable[..., int], incoming: Path, sftp_server: dict[str, Any], tmp_path: Path,
    atomic_rename: bool,
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    proxy = CuttingProxy(sftp_server["port"], cut_after=1024 * 1024)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp_server["host_line"].replace(f":{sftp_server['port']} ", f":{proxy.port} ") + "\n")
    folder = f"cut-{atomic_rename}-{tmp_path.name}"
    try:
        connector_id = make_connector(
            "filesystem", {"path": str(incoming), "transfer": "move"},
            "sftp", {"host": "127.0.0.1", "port": proxy.port, "username": "loader", "password": "sftp-pass-123",
                     "path": f"/{folder}", "known_hosts": str(known_hosts), "atomic_rename": atomic_rename})
        with pytest.raises(ConnectorRunFailed):
            run_connector_pipeline(connector_id)
    finally:
        proxy.close()
    assert (incoming / "scan.bin").read_bytes() == data  # the source stays
    landed = sftp_server["root"] / folder
    assert not landed.exists() or [p.name for p in landed.iterdir()] == []  # no partial file, no temp file


def test_temp_files_of_a_dropped_session_are_removed_by_the_next_run(
    make_connector: Callable[..., int], incoming: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".labs.csv.{'ab' * 16}.tmp"
    stale.write_bytes(b"half a file")
    unrelated = out / ".notes.keep.tmp"
    unrelated.write_bytes(b"not ours")
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    connector_id = make_connector("filesystem", {"path": str(incoming)}, "nfs", {"path": str(out)})
    run_connector_pipeline(connector_id)
    assert sorted(p.name for p in out.iterdir()) == [".notes.keep.tmp", "labs.csv"]


def test_an_s3_link_cut_mid_upload_fails_the_process_promptly(
    make_connector: Callable[..., int], incoming: Path, s3_bucket: dict[str, Any], prefect_api: str,
    config_store: str,
) -> None:
    """The run closes its record as failed and the process exits (a hung one would hold a worker slot)."""
    import time

    from tests.flows.test_cli import CAI

    data = os.urandom(12 * 1024 * 1024)  # three 5 MB parts
    (incoming / "scan.bin").write_bytes(data)
    moto_port = int(s3_bucket["credentials"]["endpoint_url"].rsplit(":", 1)[1])
    proxy = CuttingProxy(moto_port, cut_after=7 * 1024 * 1024, blackhole=True)
    credentials = {**s3_bucket["credentials"], "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                   "connect_timeout": 3, "read_timeout": 5}
    connector_id = make_connector("filesystem", {"path": str(incoming)},
                                  "s3", {"bucket": s3_bucket["bucket"], "prefix": "cut", "chunk_size_mb": 5,
                                         **credentials})
    env = {**os.environ, "DATABASE_URL": config_store, "PREFECT_API_URL": prefect_api, "COLUMNS": "250"}
    started = time.monotonic()
    try:
        done = subprocess.run([CAI, "run", str(connector_id)], env=env, capture_output=True, text=True, timeout=240,
                              check=False)
    finally:
        proxy.close()
    assert proxy.cut.is_set(), done.stdout  # the link did go silent mid-upload
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed run" in done.stdout and "timeout" in done.stdout.lower(), done.stdout
    assert time.monotonic() - started < 150
    assert (incoming / "scan.bin").read_bytes() == data
    assert not s3_bucket["fs"].exists(f"{s3_bucket['bucket']}/cut/scan.bin")


@pytest.mark.parametrize("transfer", ["move", "copy"])
def test_the_run_after_a_crash_reports_the_truth_and_delivers_everything_once(
    make_connector: Callable[..., int], incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    transfer: str,
) -> None:
    """A run dies after listing its files and before delivering them (a worker killed between dlt's
    normalize and load): its pending package and ledger must not fail, skip or duplicate the next run."""
    from dlt.pipeline.pipeline import Pipeline

    files = {"a.csv": b"id\n1\n", "b.csv": b"id\n2\n"}
    for name, data in files.items():
        (incoming / name).write_bytes(data)
    out = tmp_path / "out"
    connector_id = make_connector("filesystem", {"path": str(incoming), "transfer": transfer}, "nfs",
                                  {"path": str(out)})
    with monkeypatch.context() as crash:
        def killed(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
            raise SystemExit("worker killed")  # nothing after this line of the dead run ever runs

        crash.setattr(Pipeline, "load", killed)
        with pytest.raises(BaseException):  # noqa: B017 - whatever the dying process raised
            run_connector_pipeline(connector_id)
    assert not out.exists()
    result = run_connector_pipeline(connector_id)
    verb = "moved" if transfer == "move" else "copied"
    assert f"{verb} 2 of 2 file(s)" in result["log_summary"], result["log_summary"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert sorted(p.name for p in incoming.iterdir()) == ([] if transfer == "move" else sorted(files))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 1 MB tmpfs: a disk that fills up (mounting needs root, which CI has; elsewhere this fails loudly)."""
    assert os.geteuid() == 0, "mounting a tmpfs for the full-disk test needs root"
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_says_no_space_left_with_the_path_and_leaves_no_partial_file(
    config_store: str, schema_name: str, tmp_path: Path, tiny_disk: Path,
) -> None:
    from tests.flows.test_cli import CAI

    csv_file = tmp_path / "visits.csv"
    csv_file.write_text("id,note\n" + "".join(f"{i},some clinical text\n" for i in range(100_000)))  # ~2.4 MB
    env = {**os.environ, "CAI_PIPELINES_DIR": str(tiny_disk), "COLUMNS": "400"}
    done = subprocess.run([CAI, "load-csv", str(csv_file), "--to", config_store, "--schema", schema_name],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert f"no space left on device writing `{tiny_disk}/" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "StopIteration" not in done.stdout
    assert not list(tiny_disk.rglob("*.csv"))  # the partial staging file is gone


def test_an_sftp_link_that_goes_silent_fails_the_file_within_the_keepalives(
    make_connector: Callable[..., int], incoming: Path, sftp_server: dict[str, Any], tmp_path: Path,
) -> None:
    import time

    data = os.urandom(6 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    proxy = CuttingProxy(sftp_server["port"], cut_after=2 * 1024 * 1024, blackhole=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp_server["host_line"].replace(f":{sftp_server['port']} ", f":{proxy.port} ") + "\n")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)},
        "sftp", {"host": "127.0.0.1", "port": proxy.port, "username": "loader", "password": "sftp-pass-123",
                 "path": "/silent", "known_hosts": str(known_hosts), "keepalive_seconds": 2, "connect_timeout": 5})
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorRunFailed):
            run_connector_pipeline(connector_id)
    finally:
        proxy.close()
    assert proxy.cut.is_set() and time.monotonic() - started < 90
    assert (incoming / "scan.bin").read_bytes() == data


def test_host_keys_against_debians_openssh_with_a_known_hosts_hashed_by_ssh_keygen(
    openssh_server: dict[str, Any], tmp_path: Path,
) -> None:
    """OpenSSH's own tools write the known_hosts (`ssh-keygen -H`); OpenSSH's server answers."""
    import asyncssh

    from dlt_destinations.sftp import SftpDestinationConfig
    from dlt_destinations.sftp.client import HostKeyRefused, open_sftp

    def config(known_hosts: Path) -> SftpDestinationConfig:
        return SftpDestinationConfig.model_validate({
            "host": openssh_server["host"], "port": openssh_server["port"], "username": openssh_server["user"],
            "pkey_path": openssh_server["client_key"], "path": str(openssh_server["folder"]),
            "known_hosts": str(known_hosts), "host_key_policy": "accept-new"})

    trusted = tmp_path / "trusted"
    trusted.write_text(f"nas.example,{openssh_server['host_line']}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(trusted)], check=True, capture_output=True)
    assert trusted.read_text().startswith("|1|")  # hashed by OpenSSH itself
    before = trusted.read_text()
    fs = open_sftp(config(trusted))
    fs.pipe_file(f"{openssh_server['folder']}/hello.txt", b"hi")
    assert (openssh_server["folder"] / "hello.txt").read_bytes() == b"hi"
    assert trusted.read_text() == before  # on record: accept-new appends nothing

    changed = tmp_path / "changed"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    changed.write_text(f"[{openssh_server['host']}]:{openssh_server['port']} {other}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(changed)], check=True, capture_output=True)
    with pytest.raises(HostKeyRefused, match=r"REMOTE HOST IDENTIFICATION HAS CHANGED.*\(line 1\)"):
        open_sftp(config(changed))


def test_a_rest_endpoint_whose_link_goes_silent_fails_the_file_within_its_timeouts(
    make_connector: Callable[..., int], incoming: Path, upload_server: Any,
) -> None:
    import time
    from urllib.parse import urlsplit

    data = os.urandom(3 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    target = urlsplit(upload_server.url)
    proxy = CuttingProxy(int(target.port or 80), cut_after=1024 * 1024, blackhole=True)
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)},
        "rest_api", {"url": f"http://127.0.0.1:{proxy.port}{target.path}", "connect_timeout": 2, "read_timeout": 3,
                     "attempts": 2, "retry_backoff_seconds": 0.1})
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorRunFailed) as caught:
            run_connector_pipeline(connector_id)
    finally:
        proxy.close()
    assert proxy.cut.is_set() and time.monotonic() - started < 60
    assert "failed after 2 attempts" in caught.value.result["log_summary"]
    assert (incoming / "scan.bin").read_bytes() == data  # nothing counts as delivered: the source stays


@pytest.mark.parametrize("atomic_rename", [True, False])
def test_an_openssh_server_killed_mid_upload_loses_nothing_and_the_next_run_cleans_up(
    make_connector: Callable[..., int], incoming: Path, openssh_server: dict[str, Any], tmp_path: Path,
    atomic_rename: bool,
) -> None:
    """The sshd process serving the session is killed with SIGKILL while a `move` writes: the file
    fails, the source stays, nothing sits under the final name; the next run delivers it and leaves
    no temp file behind."""
    import threading
    import time

    import psutil

    data = os.urandom(96 * 1024 * 1024)
    (incoming / "scan.bin").write_bytes(data)
    folder = openssh_server["folder"] / f"killed-{atomic_rename}"
    folder.mkdir()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(openssh_server["host_line"] + "\n")
    connector_id = make_connector(
        "filesystem", {"path": str(incoming), "transfer": "move"},
        "sftp", {"host": openssh_server["host"], "port": openssh_server["port"], "username": openssh_server["user"],
                 "pkey_path": openssh_server["client_key"], "path": str(folder), "known_hosts": str(known_hosts),
                 "atomic_rename": atomic_rename})
    killed: list[int] = []

    def kill_the_session_once_bytes_arrive() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if any(p.stat().st_size > 0 for p in folder.iterdir()):
                for proc in psutil.Process(openssh_server["pid"]).children(recursive=True):
                    proc.kill()  # the per-connection sshd processes; the listener stays
                    killed.append(proc.pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_session_once_bytes_arrive, daemon=True)
    killer.start()
    with pytest.raises(ConnectorRunFailed) as caught:
        run_connector_pipeline(connector_id)
    killer.join(5)
    assert killed, "the session was never killed"
    assert "scan.bin" in caught.value.result["log_summary"]
    assert (incoming / "scan.bin").read_bytes() == data  # the source stays
    assert not (folder / "scan.bin").exists()  # nothing under the final name
    result = run_connector_pipeline(connector_id)
    assert "moved 1 of 1 file(s)" in result["log_summary"], result["log_summary"]
    assert [p.name for p in folder.iterdir()] == ["scan.bin"]  # no temp file of the killed session
    assert hashlib.sha256((folder / "scan.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert list(incoming.iterdir()) == []


def test_secrets_a_server_echoes_back_appear_nowhere_in_a_direct_run(
    make_connector: Callable[..., int], incoming: Path, httpserver: Any, config_store: str, tmp_path: Path,
) -> None:
    """`cai run` without Prefect: the terminal, `runs.log`, the run record and the pipelines stay clean."""
    import json

    from werkzeug import Request, Response

    from flows.store.run_records import list_runs
    from tests.flows.test_cli import CAI

    def echo(request: Request) -> Response:
        return Response(json.dumps(dict(request.headers)), status=403)

    httpserver.expect_request("/upload").respond_with_handler(echo)
    (incoming / "labs.csv").write_bytes(b"id\n1\n")
    secrets = ["pw-direct-6610", "c3ZjLWRpcmVjdDpwdy1kaXJlY3QtNjYxMA==", "token-direct-2207"]
    connector_id = make_connector(
        "filesystem", {"path": str(incoming)}, "rest_api",
        {"url": httpserver.url_for("/upload"), "auth_type": "basic", "username": "svc-direct",
         "password": "pw-direct-6610", "headers": {"X-Token": "token-direct-2207"}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(DATABASE_URL=config_store, CAI_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"),
               COLUMNS="400")
    env.pop("CAI_PIPELINES_DIR", None)  # the pipelines go under CAI_HOME, scanned below
    done = subprocess.run([CAI, "run", str(connector_id)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1 and "HTTP 403" in done.stdout, done.stdout + done.stderr
    assert "HTTP 403" in (tmp_path / "home" / "logs" / "runs.log").read_text()
    record = json.dumps(list_runs(connector_id, 1), default=str)
    for output in (done.stdout + done.stderr, record):
        for secret in secrets:
            assert secret not in output, f"`{secret}` leaked into: {output[:300]}"
    assert files_holding(tmp_path / "home", secrets) == []  # runs.log, dlt's pipelines


# A process killed after a load job's transaction committed and before dlt marked the job done (its
# file moved to completed_jobs): the next run finishes that package, and must land nothing twice.
_DIES_AFTER_COMMIT = """
import os, sys
from dlt_destinations.postgres import client
job, table = getattr(client, sys.argv[1]), sys.argv[2]
committed = job.run
def run(self):
    committed(self)
    if table in ("*", self.load_table_name):
        os._exit(9)
job.run = run
from flows.cli import app
sys.argv = ["cai", "load-csv", *sys.argv[3:]]
app()
"""


def _psql_export(url: str, path: Path, first: int, last: int) -> None:
    """Visits as psql writes them: leading-zero MRNs, fractional-second timestamps, NULLs."""
    query = (f"SELECT g AS visit_id, lpad(g::text, 8, '0') AS mrn, "
             f"timestamptz '2026-01-01 08:00:00.123456+00' + g * interval '1 minute' AS seen_at, "
             f"CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1.5 END AS dose FROM generate_series({first}, {last}) g")
    subprocess.run(["psql", url, "-X", "-q", "-c", f"\\copy ({query}) to '{path}' csv header"], check=True)


def _load_csv(args: list[str], pipelines: Path, dies_after: tuple[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    from tests.flows.test_cli import CAI

    env = {**os.environ, "CAI_PIPELINES_DIR": str(pipelines), "COLUMNS": "250"}
    if dies_after is None:
        return subprocess.run([CAI, "load-csv", *args], env=env, capture_output=True, text=True, timeout=240,
                              check=False)
    return subprocess.run([str(Path(CAI).parent / "python"), "-c", _DIES_AFTER_COMMIT, *dies_after, *args],
                          env=env, capture_output=True, text=True, timeout=240, check=False)


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _execute(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(sql)


@pytest.mark.parametrize("job", ["ExactCsvCopyJob", "OnceInsertValuesJob"])
def test_a_process_killed_after_a_job_committed_lands_nothing_twice(
    config_store: str, schema_name: str, tmp_path: Path, job: str,
) -> None:
    """Killed once the file's COPY committed (its rows would land twice), or once the pipeline state's
    INSERT committed (its unique row id failed the next run: seen in CI), before dlt marked the job
    done. The next `cai load-csv` finishes the dead run's package: every row lands once."""
    folder = tmp_path / "in"
    folder.mkdir()
    _psql_export(config_store, folder / "visits.csv", 1, 5000)
    pipelines = tmp_path / "pipelines"
    target = [str(folder / "visits.csv"), "--to", config_store, "--schema", schema_name]
    table = "visits" if job == "ExactCsvCopyJob" else "_dlt_pipeline_state"
    dead = _load_csv(target, pipelines, dies_after=(job, table))
    assert dead.returncode == 9, dead.stdout + dead.stderr
    assert list(pipelines.glob("load_csv_*/load/normalized/*/started_jobs/*")), "no job was left started"

    again = _load_csv(target, pipelines)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows(config_store, f'SELECT count(*), count(DISTINCT visit_id) FROM "{schema_name}".visits') == [
        (5000, 5000)]
    assert _rows(config_store, f'SELECT count(*) FROM "{schema_name}"._dlt_pipeline_state') == [(1,)]
    # every value as psql wrote it: compared in SQL with the file read by psql
    _execute(config_store, f'CREATE TABLE "{schema_name}".ref (visit_id bigint, mrn text, seen_at timestamptz, '
                        'dose numeric)')
    subprocess.run(["psql", config_store, "-X", "-q", "-c",
                    f"\\copy \"{schema_name}\".ref from '{folder / 'visits.csv'}' csv header"], check=True)
    landed = f'SELECT visit_id, mrn, seen_at, dose FROM "{schema_name}".visits'
    reference = f'TABLE "{schema_name}".ref'
    assert _rows(config_store, f"SELECT count(*) FROM (({landed} EXCEPT ALL {reference}) UNION ALL "
                               f"({reference} EXCEPT ALL {landed})) d") == [(0,)]
    # the finished load forgot its landed jobs
    assert _rows(config_store, f'SELECT count(*) FROM "{schema_name}"._cai_landed_jobs') == [(0,)]


def test_a_replace_killed_after_its_first_file_committed_is_finished_without_emptying_it_again(
    config_store: str, schema_name: str, tmp_path: Path,
) -> None:
    """Two files replace one table; the process dies once the first file's COPY (which emptied the table
    in its transaction) committed. Finishing that load COPYs the second file beside the first: emptying
    the table again would drop the first file's rows."""
    folder = tmp_path / "in"
    folder.mkdir()
    _psql_export(config_store, folder / "a.csv", 1, 3000)
    _psql_export(config_store, folder / "b.csv", 3001, 5000)
    pipelines = tmp_path / "pipelines"
    target = [str(folder), "--to", config_store, "--schema", schema_name, "--table", "visits"]
    first = _load_csv([*target, "--replace"], pipelines)
    assert first.returncode == 0, first.stdout + first.stderr
    dead = _load_csv([*target, "--replace"], pipelines, dies_after=("ExactCsvCopyJob", "*"))
    assert dead.returncode == 9, dead.stdout + dead.stderr

    again = _load_csv(target, pipelines)  # no --replace: only the dead run's package lands anything
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows(config_store, f'SELECT count(*), count(DISTINCT visit_id), min(visit_id), max(visit_id) '
                               f'FROM "{schema_name}".visits') == [(5000, 5000, 1, 5000)]
