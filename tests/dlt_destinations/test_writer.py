"""safe_join and the one file writer against a real local filesystem and a real S3 endpoint (moto over HTTP)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import fsspec
import fsspec.implementations.local
import pytest

from cai_common import disk
from dlt_destinations import DESTINATIONS
from dlt_destinations.writer import FileTarget, UnsafePathError, VerificationError, safe_join, write_file

MB = 1024 * 1024


@pytest.mark.parametrize("relative", ["../x.csv", "a/../../x.csv", "/etc/passwd", "..", "", "a\\..\\x"])
def test_safe_join_refuses_paths_leaving_the_root(relative: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_join("bucket/out", relative)


def test_safe_join_keeps_nested_relative_paths() -> None:
    assert safe_join("bucket/out/", "2024/q1/./x.csv") == "bucket/out/2024/q1/x.csv"


def test_local_put_renames_into_place_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    local = tmp_path / "src.csv"
    local.write_bytes(b"id\n1\n")
    fs = fsspec.filesystem("file")
    target = FileTarget("nfs", fs, str(tmp_path / "dest"))
    final = str(tmp_path / "dest" / "deep" / "x.csv")
    assert write_file(fs, str(local), target, final).bytes == 5
    assert Path(final).read_bytes() == b"id\n1\n"
    assert sorted(os.listdir(tmp_path / "dest" / "deep")) == ["x.csv"]
    linked = str(tmp_path / "dest" / "linked.csv")
    assert write_file(fs, str(local), target, linked, link=True).verified == "size (hard link)"
    assert os.stat(linked).st_ino == os.stat(local).st_ino  # an export's own file: no bytes copied

    missing = str(tmp_path / "gone.csv")
    with pytest.raises(FileNotFoundError):
        write_file(fs, missing, target, str(tmp_path / "dest" / "y.csv"))
    assert sorted(os.listdir(tmp_path / "dest")) == ["deep", "linked.csv"]


def test_s3_single_put_up_to_the_threshold_multipart_above(tmp_path: Path, s3_bucket: dict[str, Any]) -> None:
    fs, bucket = s3_bucket["fs"], s3_bucket["bucket"]
    config = DESTINATIONS.parse("s3", {**s3_bucket["credentials"], "bucket": bucket, "chunk_size_mb": 5})
    target = DESTINATIONS.kind("s3").file_target(config)  # the spec's rule: multipart above 25 MB
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(20 * MB))
    large.write_bytes(os.urandom(30 * MB))
    local = fsspec.filesystem("file")
    write_file(local, str(small), target, f"{bucket}/small.bin", verify="size")
    write_file(local, str(large), target, f"{bucket}/large.bin", verify="size")
    fs.invalidate_cache()
    assert "-" not in fs.info(f"{bucket}/small.bin")["ETag"]
    assert re.search(r"-6\"?$", fs.info(f"{bucket}/large.bin")["ETag"])  # 30 MB in 5 MB parts
    assert fs.cat_file(f"{bucket}/large.bin") == large.read_bytes()


def test_sftp_copies_are_hashed_by_the_server_where_the_login_may_and_read_back_where_not(
    tmp_path: Path, openssh_server: dict[str, Any], sftp_server: dict[str, Any],
) -> None:
    """Debian's OpenSSH hashes the file for the login; the SFTP-only test server cannot, so the file is read back."""
    data = os.urandom(3 * MB + 5)
    local = tmp_path / "scan.bin"
    local.write_bytes(data)
    fs = fsspec.filesystem("file")
    openssh = DESTINATIONS.parse("sftp", {
        "host": openssh_server["host"], "port": openssh_server["port"], "username": openssh_server["user"],
        "pkey_path": openssh_server["client_key"], "path": str(openssh_server["folder"]),
        "known_hosts": str(tmp_path / "kh")})
    (tmp_path / "kh").write_text(openssh_server["host_line"] + "\n")
    target = DESTINATIONS.kind("sftp").file_target(openssh)
    done = write_file(fs, str(local), target, f"{openssh_server['folder']}/hashed/scan.bin")
    assert done.verified == "hash (server)" and (openssh_server["folder"] / "hashed" / "scan.bin").read_bytes() == data
    sftp_only = DESTINATIONS.parse("sftp", {
        "host": sftp_server["host"], "port": sftp_server["port"], "username": "loader", "password": "sftp-pass-123",
        "path": f"/{tmp_path.name}", "known_hosts": sftp_server["known_hosts"]})
    target = DESTINATIONS.kind("sftp").file_target(sftp_only)
    done = write_file(fs, str(local), target, f"/{tmp_path.name}/scan.bin")
    assert done.verified == "hash" and (sftp_server["root"] / tmp_path.name / "scan.bin").read_bytes() == data


def test_sftp_writes_go_out_behind_the_caller_and_a_refused_one_fails_the_close(
    tmp_path: Path, sftp_server: dict[str, Any],
) -> None:
    """Writes are not awaited one by one (the link would stand idle between them): on a server that
    answers each write 0.3 s late, four writes return at once, and the file holds every byte once
    closed. A write the server refuses (a full disk) while the caller goes on is raised by `close`,
    with the server's reason."""
    from dlt_destinations.sftp.client import SftpServerError

    def filesystem(user: str) -> Any:
        config = DESTINATIONS.parse("sftp", {
            "host": sftp_server["host"], "port": sftp_server["port"], "username": user,
            "password": "sftp-pass-123", "path": f"/{tmp_path.name}", "known_hosts": sftp_server["known_hosts"]})
        return DESTINATIONS.kind("sftp").file_target(config).fs

    pieces = [os.urandom(100_000) for _ in range(4)]
    fs = filesystem("slow")
    fs.makedirs(f"/{tmp_path.name}", exist_ok=True)
    out = fs.open(f"/{tmp_path.name}/behind.bin", "wb")
    started = time.monotonic()
    for piece in pieces:
        out.write(piece)
    returned = time.monotonic() - started
    out.close()
    assert returned < 0.25, f"four writes took {returned:.2f} s: each waited for the server's answer"
    assert time.monotonic() - started >= 0.3  # close waited for the answers
    assert (sftp_server["root"] / tmp_path.name / "behind.bin").read_bytes() == b"".join(pieces)

    fs = filesystem("flaky")  # writes fail past 1 MB
    out = fs.open(f"/{tmp_path.name}/full.bin", "wb")
    out.write(os.urandom(MB))
    out.write(os.urandom(MB))  # refused by the server, raised later
    with pytest.raises(SftpServerError, match="sftp server: No space left on device"):
        out.close()


@pytest.mark.parametrize(("commands", "verified"), [
    (["openssl", "sha256sum"], "hash (server)"),
    (["openssl"], "hash (server)"),  # OpenSSL is asked first
    (["sha256sum"], "hash (server)"),  # no OpenSSL on the server: coreutils
    ([], "hash"),  # neither: read back over SFTP
])
def test_sftp_server_hash_uses_openssl_then_sha256sum_then_reads_back(
    tmp_path: Path, openssh_server: dict[str, Any], commands: list[str], verified: str,
) -> None:
    """A login whose PATH holds only ``commands`` (its key line sets PATH on the real OpenSSH server)."""
    import shutil
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ["bash", "sh", *commands]:
        (bin_dir / command).symlink_to(shutil.which(command) or command)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = Path(openssh_server["client_key"]).parent / "authorized_keys"
    with authorized.open("a") as f:
        f.write(f'environment="PATH={bin_dir}" {(tmp_path / "key.pub").read_text()}')
    (tmp_path / "kh").write_text(openssh_server["host_line"] + "\n")
    config = DESTINATIONS.parse("sftp", {
        "host": openssh_server["host"], "port": openssh_server["port"], "username": openssh_server["user"],
        "pkey_path": str(key), "path": str(openssh_server["folder"]), "known_hosts": str(tmp_path / "kh")})
    data = os.urandom(MB + 7)
    (tmp_path / "scan.bin").write_bytes(data)
    final = openssh_server["folder"] / tmp_path.name / "scan.bin"
    done = write_file(fsspec.filesystem("file"), str(tmp_path / "scan.bin"),
                      DESTINATIONS.kind("sftp").file_target(config), str(final))
    assert (done.verified, final.read_bytes()) == (verified, data)


class _Corrupting(fsspec.implementations.local.LocalFileSystem):
    """A local disk that stores one byte other than the one written (a failing disk or NFS server)."""

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        opened = super()._open(path, mode, **kwargs)
        if "w" in mode:
            write = opened.write
            opened.write = lambda data: write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        return opened


def test_a_local_copy_whose_stored_bytes_differ_fails_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(5 * MB))
    disk = _Corrupting(skip_instance_cache=True)
    target = FileTarget("nfs", disk, str(tmp_path / "out"))
    with pytest.raises(VerificationError, match="differ from those written"):
        write_file(fsspec.filesystem("file"), str(source), target, str(tmp_path / "out" / "in.bin"))
    assert os.listdir(tmp_path / "out") == []
    # verify="size" trusts the disk: the same copy lands
    assert write_file(fsspec.filesystem("file"), str(source), target, str(tmp_path / "out" / "in.bin"),
                      verify="size").verified == "size"


class _SlowLocal(fsspec.implementations.local.LocalFileSystem):
    """A local disk whose reads take 20 ms per piece (a source slower than the disk, as a network is)."""

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        opened = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = opened.read
            opened.read = lambda size=-1: (time.sleep(0.02), read(size))[1]
        return opened


def test_a_local_copy_reaches_the_disk_while_it_is_written_and_fails_whole_if_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(8 * MB))
    out = tmp_path / "out"
    target = FileTarget("nfs", fsspec.filesystem("file"), str(out))
    final = out / "in.bin"
    synced: list[tuple[list[str], int]] = []  # (names in the folder, bytes on disk) at each fdatasync
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.append((os.listdir(out), os.fstat(fd).st_size))

    monkeypatch.setattr(disk, "FLUSH_STEP", 2 * MB)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    started: list[str] = []  # names of the threads started

    class Recording(threading.Thread):
        def start(self) -> None:
            started.append(self.name)
            super().start()

    monkeypatch.setattr(threading, "Thread", Recording)
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(MB))
    write_file(_SlowLocal(skip_instance_cache=True), str(small), target, str(out / "small.bin"))
    assert (out / "small.bin").read_bytes() == small.read_bytes()
    assert synced == [] and "cai-flush" not in started  # under one step: no sync thread, the final fsync only
    (out / "small.bin").unlink()
    done = write_file(_SlowLocal(skip_instance_cache=True), str(source), target, str(final))
    assert "cai-flush" in started
    assert (done.bytes, final.read_bytes()) == (8 * MB, source.read_bytes())
    # synced in steps while the copy was still under its temp name, not only by the fsync at the end
    assert all(names != ["in.bin"] for names, _ in synced)
    assert len([size for _, size in synced if size < 8 * MB]) >= 2

    final.unlink()

    def failing(fd: int) -> None:  # the disk (or the NFS server) reports a write error
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        write_file(_SlowLocal(skip_instance_cache=True), str(source), target, str(final))
    assert os.listdir(out) == [] and source.stat().st_size == 8 * MB  # no final name, no temp, source kept


def test_sftp_sessions_encrypt_with_aes_gcm_where_the_cpu_has_aes_instructions(
    tmp_path: Path, openssh_server: dict[str, Any],
) -> None:
    """What the real OpenSSH server agreed to: AES-GCM first (asyncssh's own first choice, ChaCha20,
    cost 40 % more time here), and asyncssh's order kept on a CPU without AES instructions."""
    from dlt_destinations.sftp.client import _has_aes_instructions, encryption_algs, open_sftp

    (tmp_path / "kh").write_text(openssh_server["host_line"] + "\n")
    config = DESTINATIONS.parse("sftp", {
        "host": openssh_server["host"], "port": openssh_server["port"], "username": openssh_server["user"],
        "pkey_path": openssh_server["client_key"], "path": str(openssh_server["folder"]),
        "known_hosts": str(tmp_path / "kh")})
    fs = open_sftp(config)
    expected = "aes128-gcm@openssh.com" if _has_aes_instructions() else "chacha20-poly1305@openssh.com"
    assert (fs.client.get_extra_info("send_cipher"), fs.client.get_extra_info("recv_cipher")) == (expected, expected)
    assert encryption_algs(aes_in_hardware=False)[0] == "chacha20-poly1305@openssh.com"
    assert encryption_algs(aes_in_hardware=True)[:2] == ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
    assert sorted(encryption_algs(True)) == sorted(encryption_algs(False))  # reordered, nothing dropped
