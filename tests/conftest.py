"""Session services: a real PostgreSQL (CAI_TEST_DATABASE_URL or the embedded server) and a Prefect server."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

# Before Prefect is imported anywhere: its first temporary server can take 27 s here (STACK.md), and
# analytics off removes a spurious "database is locked" traceback.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Fixtures write a folder's files a moment before each run, whole: the worker's default wait for files to
# settle (5 s) would only add up. `tests/flows/test_readiness.py` sets its own settle times, with producers
# still writing, and runs the 5 s default in a worker process with this variable unset.
os.environ["CAI_SETTLE_SECONDS"] = "0"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: CAI_TEST_DATABASE_URL when set (CI), else the embedded one in a temp dir."""
    url = os.environ.get("CAI_TEST_DATABASE_URL")
    if url:
        # A configured server that is down fails the run here, loudly: no silent skip.
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
        yield url
        return
    from flows.store.embedded import embedded_database_url, stop_embedded_server

    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    try:
        yield embedded_database_url(pgdata)
    finally:
        stop_embedded_server(pgdata)


@pytest.fixture(scope="session")
def database_url(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this session, used as the config store (DATABASE_URL) and as the warehouse."""
    name = f"cai_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "CAI_HOME", "CAI_PIPELINES_DIR")}
    os.environ["DATABASE_URL"] = url
    os.environ["CAI_HOME"] = str(tmp_path_factory.mktemp("cai_home"))
    os.environ["CAI_PIPELINES_DIR"] = str(tmp_path_factory.mktemp("pipelines"))
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def config_store(database_url: str) -> str:
    """The session database with the config-store schema applied."""
    from flows.store.config_store import init_db

    init_db(database_url)
    return database_url


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server (SQLite) for the session; yields its API URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def schema_name() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """An empty folder to drop source files into."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def fresh_db(server_url: str) -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"cai_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP on loopback (moto's server), for the whole session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[dict[str, object]]:
    """A fresh bucket: yields its name, the config credentials, and an s3fs filesystem to fill it."""
    import s3fs

    credentials = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret-value",
                   "endpoint_url": s3_endpoint}
    fs = s3fs.S3FileSystem(key="test-key", secret="test-secret-value", client_kwargs={"endpoint_url": s3_endpoint},
                           skip_instance_cache=True)
    bucket = f"bucket-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    try:
        yield {"bucket": bucket, "credentials": credentials, "fs": fs}
    finally:
        fs.rm(bucket, recursive=True)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A real SFTP server over TCP on loopback (asyncssh, in a daemon thread with its own loop).

    Users: `loader` / password `sftp-pass-123`, `keyuser` with the generated client key, and with the
    same password `flaky` (writes fail past 1 MB), `plainrename` (no posix-rename extension) and
    `norename` (no rename at all). Each login lands chrooted in `root`. Yields host,
    port, root, a known_hosts file naming the server's key, the client key path and the host key line.
    """
    import asyncio
    import threading

    import asyncssh

    root = tmp_path_factory.mktemp("sftp_root")
    keys = tmp_path_factory.mktemp("sftp_keys")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(str(keys / "id_ed25519"))
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            if username == "keyuser":
                self._conn.set_authorized_keys(authorized)
            return True

        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username in ("loader", "flaky", "norename", "plainrename", "slow") and password == "sftp-pass-123"

        def public_key_auth_supported(self) -> bool:
            return True

    class DiskFillsUp(asyncssh.SFTPServer):
        """The `flaky` user's session: writes fail once a file passes 1 MB, like a full disk."""

        def write(self, file_obj: object, offset: int, data: bytes) -> object:
            if offset + len(data) > 1024 * 1024:
                raise asyncssh.SFTPFailure("No space left on device")
            return super().write(file_obj, offset, data)

    class SlowDisk(asyncssh.SFTPServer):
        """The `slow` user's session: every write request is answered 0.3 s after it arrives."""

        async def write(self, file_obj: object, offset: int, data: bytes) -> None:
            await asyncio.sleep(0.3)
            super().write(file_obj, offset, data)

    class PlainRenameOnly(asyncssh.SFTPServer):
        """The `plainrename` user's session: SFTP v3 rename only, no posix-rename extension."""

        def posix_rename(self, oldpath: bytes, newpath: bytes) -> object:
            raise asyncssh.SFTPOpUnsupported("posix-rename not supported")

    class NoRename(PlainRenameOnly):
        """The `norename` user's session: no rename at all, like MinIO's SFTP gateway."""

        def rename(self, oldpath: bytes, newpath: bytes) -> object:
            raise asyncssh.SFTPOpUnsupported("rename not supported")

    sessions = {"flaky": DiskFillsUp, "plainrename": PlainRenameOnly, "norename": NoRename, "slow": SlowDisk}

    def sftp_session(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        session = sessions.get(chan.get_extra_info("username"), asyncssh.SFTPServer)
        return session(chan, chroot=str(root))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[host_key],
            sftp_factory=sftp_session,
        )

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    port = acceptor.sockets[0].getsockname()[1]
    host_line = f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}"
    (keys / "known_hosts").write_text(host_line + "\n")
    try:
        yield {"host": "127.0.0.1", "port": port, "root": root, "known_hosts": str(keys / "known_hosts"),
               "client_key": str(keys / "id_ed25519"), "host_line": host_line}
    finally:
        async def stop() -> None:
            """The listener, then every session clients left open (else their tasks are destroyed
            pending at exit, each logged as an asyncio ERROR)."""
            acceptor.close()
            await acceptor.wait_closed()
            left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def upload_server(httpserver: Any) -> Any:
    """A real HTTP server (pytest-httpserver, werkzeug) recording every upload it receives.

    `answers` is a list of (status, headers) replies used in order, then 201 for everything after.
    Each recorded upload holds method, path, headers, form fields, files {field: (name, type, bytes)}
    and, for raw bodies, the body.
    """
    from werkzeug import Request, Response

    class Recorder:
        def __init__(self) -> None:
            self.uploads: list[dict[str, Any]] = []
            self.answers: list[tuple[int, dict[str, str]]] = []
            self.url = httpserver.url_for("/upload")

        def handle(self, request: Request) -> Response:
            upload: dict[str, Any] = {"method": request.method, "path": request.path,
                                      "headers": dict(request.headers)}
            if request.mimetype == "multipart/form-data":
                upload["form"] = dict(request.form)
                upload["files"] = {k: (f.filename, f.mimetype, f.read()) for k, f in request.files.items()}
            else:
                upload["body"] = request.get_data()
            self.uploads.append(upload)
            status, headers = self.answers.pop(0) if self.answers else (201, {})
            upload["status"] = status
            return Response("nope" if status >= 300 else '{"ok": true}', status=status, headers=headers)

    recorder = Recorder()
    httpserver.expect_request(re.compile("/.*")).respond_with_handler(recorder.handle)
    return recorder


@pytest.fixture(scope="session")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Debian's OpenSSH server (`.ci/run` installs openssh-server) on loopback, SFTP by internal-sftp.

    Logs in as the current user with a generated key. Yields host, port, user, the client key path,
    the server's public host key line and a folder to write into. A missing sshd fails loudly.
    """
    import getpass
    import shutil
    import subprocess
    import time

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(sshd).exists(), "OpenSSH's sshd is needed (apt-get install openssh-server; .ci/run does it)"
    work = tmp_path_factory.mktemp("openssh")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    port = _free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work}/host_key\nPidFile {work}/sshd.pid\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        # a key line may set its session's PATH (`environment="PATH=..."`): which commands a login finds
        "PermitUserEnvironment PATH\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else "sshd exited"
                time.sleep(0.1)
        host_key = (work / "host_key.pub").read_text().split()
        folder = work / "drop"
        folder.mkdir()
        yield {"host": "127.0.0.1", "port": port, "user": getpass.getuser(), "client_key": str(work / "client_key"),
               "host_line": f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}", "folder": folder,
               "pid": server.pid}
    finally:
        server.terminate()
        server.wait(10)
