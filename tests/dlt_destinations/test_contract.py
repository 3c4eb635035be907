"""The contract every transfer target keeps, run against each real destination.

Folder, S3 (moto over HTTP), SFTP (asyncssh over TCP) and REST (a local HTTP server) each get the
same tests: exact bytes at the relative path, a second send replacing the file whole with no temp
file left behind, escaping paths refused before a byte moves, a failed send leaving nothing
under the final name while the source stays, and a source that a producer wrote to after it was
taken refused (`SourceChanged`), with nothing under the final name where the target can take a copy
back (every kind but an upload endpoint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import pytest

from cai_common.file_versions import SourceChanged, guard, observe
from dlt_destinations import DESTINATIONS
from dlt_destinations.files import FilesystemTarget, TransferTarget
from dlt_destinations.writer import UnsafePathError

DATA = os.urandom(2 * 1024 * 1024 + 3)  # above the `flaky` SFTP user's 1 MB disk


class TargetContract:
    """Subclasses provide `target` and `broken` fixtures and say what landed where."""

    failure: type[BaseException] = OSError
    """What a broken destination raises (the flow records its message per file)."""
    takes_back = True
    """A copy of a source that changed is discarded (False for an endpoint that stored it already)."""

    def landed(self, target: Any, relative_path: str) -> bytes | None:
        """The bytes under the final name, or None."""
        raise NotImplementedError

    def names(self, target: Any) -> list[str]:
        """Every name now at the destination (temp files included)."""
        raise NotImplementedError

    @pytest.fixture
    def source(self, tmp_path: Path) -> tuple[Any, str, Any]:
        """(filesystem, path, the check that the file is still the version taken now)."""
        path = tmp_path / "source" / "scan.bin"
        path.parent.mkdir()
        path.write_bytes(DATA)
        fs = fsspec.filesystem("file")
        taken = observe(fs, str(path))
        assert taken is not None
        return fs, str(path), guard(fs, str(path), taken)

    def test_a_source_written_to_after_it_was_taken_is_refused(
        self, target: TransferTarget, source: tuple[Any, str, Any],
    ) -> None:
        with open(source[1], "ab") as producer:  # a producer still appending
            producer.write(b"more rows\n")
        with pytest.raises(SourceChanged, match="size 2097155 -> 2097165 bytes"):
            target.send(source[0], source[1], "scan.bin", source[2])
        if self.takes_back:
            assert self.landed(target, "scan.bin") is None
            assert self.names(target) == []  # no temp file either
        assert Path(source[1]).read_bytes() == DATA + b"more rows\n"

    def test_delivers_exact_bytes_at_the_relative_path(
        self, target: TransferTarget, source: tuple[Any, str, Any],
    ) -> None:
        result = target.send(source[0], source[1], "2024/q1/scan.bin", source[2])
        assert result["bytes"] == len(DATA)
        assert self.landed(target, "2024/q1/scan.bin") == DATA

    def test_a_second_send_replaces_the_file_whole_and_leaves_no_temp_file(
        self, target: TransferTarget, source: tuple[Any, str, Any],
    ) -> None:
        target.send(source[0], source[1], "scan.bin", source[2])
        target.send(source[0], source[1], "scan.bin", source[2])
        assert self.landed(target, "scan.bin") == DATA
        assert self.names(target) == ["scan.bin"]

    @pytest.mark.parametrize("bad", ["../escape.bin", "/etc/escape.bin", "a/../../escape.bin"])
    def test_escaping_paths_are_refused_before_anything_moves(
        self, target: TransferTarget, source: tuple[Any, str, Any], bad: str,
    ) -> None:
        with pytest.raises(UnsafePathError):
            target.url(bad)
        with pytest.raises(UnsafePathError):
            target.send(source[0], source[1], bad, source[2])
        assert self.names(target) == []

    def test_a_failed_send_leaves_nothing_under_the_final_name_and_the_source_intact(
        self, broken: TransferTarget, source: tuple[Any, str, Any],
    ) -> None:
        with pytest.raises(self.failure):
            broken.send(source[0], source[1], "scan.bin", source[2])
        assert self.landed(broken, "scan.bin") is None
        assert self.names(broken) == []  # no temp file either
        assert Path(source[1]).read_bytes() == DATA


def _kind_target(code: str, raw: dict[str, Any]) -> Any:
    """The transfer target a data path gets from the kind: a FilesystemTarget, or the kind's upload target."""
    kind = DESTINATIONS.kind(code)
    config = DESTINATIONS.parse(code, raw)
    if kind.file_target is not None:
        return FilesystemTarget(kind.file_target(config))
    assert kind.upload_target is not None
    return kind.upload_target(config)


class TestFolder(TargetContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Any:
        return _kind_target("nfs", {"path": str(tmp_path / "nfs")})

    @pytest.fixture
    def broken(self, tmp_path: Path) -> Any:
        (tmp_path / "not-a-folder").write_text("a file where the folder should be")
        return _kind_target("nfs", {"path": str(tmp_path / "not-a-folder" / "nfs")})

    def landed(self, target: Any, relative_path: str) -> bytes | None:
        path = Path(target.target.root) / relative_path
        return path.read_bytes() if path.is_file() else None

    def names(self, target: Any) -> list[str]:
        root = Path(target.target.root)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


class TestS3(TargetContract):
    @pytest.fixture
    def target(self, s3_bucket: dict[str, Any]) -> Any:
        return _kind_target("s3", {**s3_bucket["credentials"], "bucket": s3_bucket["bucket"], "prefix": "archive",
                                   "chunk_size_mb": 5})

    @pytest.fixture
    def broken(self, s3_bucket: dict[str, Any]) -> Any:
        return _kind_target("s3", {**s3_bucket["credentials"], "bucket": f"no-such-bucket-{s3_bucket['bucket']}",
                                   "prefix": "archive"})

    def landed(self, target: Any, relative_path: str) -> bytes | None:
        path = f"{target.target.root}/{relative_path}"
        try:
            return bytes(target.target.fs.cat_file(path))
        except (FileNotFoundError, OSError):
            return None

    def names(self, target: Any) -> list[str]:
        target.target.fs.invalidate_cache()
        try:
            return sorted(p.removeprefix(f"{target.target.root}/") for p in target.target.fs.find(target.target.root))
        except FileNotFoundError:  # the broken target's bucket does not exist
            return []


class TestSftp(TargetContract):
    @staticmethod
    def _open(sftp_server: dict[str, Any], user: str, tmp_path: Path) -> Any:
        return _kind_target("sftp", {"host": sftp_server["host"], "port": sftp_server["port"], "username": user,
                                     "password": "sftp-pass-123", "path": f"/{tmp_path.name}",
                                     "known_hosts": sftp_server["known_hosts"]})

    @pytest.fixture
    def target(self, sftp_server: dict[str, Any], tmp_path: Path) -> Any:
        return self._open(sftp_server, "loader", tmp_path)

    @pytest.fixture
    def broken(self, sftp_server: dict[str, Any], tmp_path: Path) -> Any:
        return self._open(sftp_server, "flaky", tmp_path)  # writes fail past 1 MB, like a full disk

    def landed(self, target: Any, relative_path: str) -> bytes | None:
        path = f"{target.target.root}/{relative_path}"
        return bytes(target.target.fs.cat_file(path)) if target.target.fs.exists(path) else None

    def names(self, target: Any) -> list[str]:
        if not target.target.fs.exists(target.target.root):
            return []
        return sorted(p.removeprefix(f"{target.target.root}/") for p in target.target.fs.find(target.target.root))


class TestRest(TargetContract):
    takes_back = False  # what an endpoint stored stays stored: the source stays for the next run

    @pytest.fixture
    def target(self, upload_server: Any) -> Any:
        self.server = upload_server
        return _kind_target("rest_api", {"url": upload_server.url, "retry_backoff_seconds": 0})

    @pytest.fixture
    def broken(self, upload_server: Any) -> Any:
        self.server = upload_server
        upload_server.answers = [(503, {})] * 3
        return _kind_target("rest_api", {"url": upload_server.url, "retry_backoff_seconds": 0})

    def landed(self, target: Any, relative_path: str) -> bytes | None:
        accepted = [u["files"]["file"] for u in self.server.uploads if 200 <= u["status"] < 300]
        found = [content for name, _, content in accepted if name == relative_path]
        return found[-1] if found else None

    def names(self, target: Any) -> list[str]:  # what the endpoint accepted, once per name
        return sorted({u["files"]["file"][0] for u in self.server.uploads if 200 <= u["status"] < 300})
