"""One version of a file, told apart from the next: size, modification time and identity, observed
through fsspec, and the check that a file is still the version that was taken.

Shared by the file sources (`dlt_sources.filesystem.readiness`) and the transfer destinations
(`dlt_destinations.files`), which delete a source only if it is still the file they copied.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dlt.common.storages.fsspec_filesystem import MTIME_DISPATCH
from fsspec import AbstractFileSystem

from cai_common.errors import CaiError


class SourceChanged(CaiError, OSError):
    """A source file whose size, modification time or identity changed while it was being read."""

    def __init__(self, file_url: str, before: Fingerprint, after: Fingerprint | None) -> None:
        self.file_url, self.before, self.after = file_url, before, after
        self.difference = "gone" if after is None else before.difference(after)
        what = "is gone" if after is None else f"changed ({self.difference})"
        super().__init__(f"`{file_url}` {what} while it was read: a producer is still writing it; "
                         "nothing of it was kept, and the source stays for the next run")


@dataclass(frozen=True)
class Fingerprint:
    """What tells one version of a file from another: size, modification time and identity."""

    size: int | None
    modified: datetime | None
    identity: str | None
    """The inode on local and NFS folders, the ETag on S3; None where the filesystem tells neither."""

    def difference(self, other: Fingerprint) -> str:
        """Which of the three differ, in words (never the file's content)."""
        changed = [name for name in ("size", "modified", "identity") if getattr(self, name) != getattr(other, name)]
        return ", ".join({"size": f"size {self.size} -> {other.size} bytes", "modified": "modification time",
                          "identity": "identity (replaced by another file)"}[c] for c in changed) or "nothing"

    def stamp(self) -> dict[str, Any]:
        """The loaded-files ledger's stamp of this version (`reports.stamp`'s form)."""
        return {"modified": str(self.modified), "size": self.size}

    def as_dict(self) -> dict[str, Any]:
        """JSON form, carried in a transfer's manifest."""
        return {"size": self.size, "modified": self.modified.isoformat() if self.modified else None,
                "identity": self.identity}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Fingerprint:
        modified = value.get("modified")
        return cls(value.get("size"), datetime.fromisoformat(modified) if modified else None, value.get("identity"))


def scheme_of(fs: AbstractFileSystem) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return "file" if protocol in ("file", "local") else protocol


def is_local(fs: AbstractFileSystem) -> bool:
    return scheme_of(fs) == "file"


def fs_path(fs: AbstractFileSystem, url: str) -> str:
    """A listed file's URL as its filesystem opens it: dlt's `file://` URLs are percent-encoded (a space is
    `%20`), which fsspec's local filesystem takes literally."""
    if is_local(fs) and url.startswith("file:"):
        from dlt.common.storages.configuration import FilesystemConfiguration

        return str(FilesystemConfiguration.make_local_path(url))
    return url


def fingerprint_of(info: dict[str, Any], scheme: str) -> Fingerprint:
    """A file's fingerprint from fsspec's ``info`` (or a listing's entry)."""
    modified = None
    if scheme in MTIME_DISPATCH:
        try:
            modified = MTIME_DISPATCH[scheme](info)
        except (KeyError, TypeError, ValueError):
            modified = None
    identity = info.get("ino") or info.get("ETag") or info.get("etag")
    size = info.get("size")
    return Fingerprint(int(size) if size is not None else None, modified, str(identity) if identity else None)


def observe(fs: AbstractFileSystem, url: str) -> Fingerprint | None:
    """The file's fingerprint now, asked of its server (None when it is gone)."""
    if is_local(fs):
        try:  # fstat through a descriptor: NFS revalidates attributes on open
            fd = os.open(fs_path(fs, url), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return fingerprint_of({"size": st.st_size, "mtime": st.st_mtime, "ino": st.st_ino}, "file")
    try:
        fs.invalidate_cache(fs._strip_protocol(url))
        info = fs.info(url)
    except FileNotFoundError:
        return None
    return fingerprint_of(info, scheme_of(fs))


def guard(fs: AbstractFileSystem, url: str, taken: Fingerprint) -> Callable[[], None]:
    """A check to call after reading ``url``: raises SourceChanged unless it is still ``taken`` (its identity
    compared where ``taken`` knows it: an S3 listing tells no ETag)."""

    def check() -> None:
        now = observe(fs, url)
        if not same_version(taken, now):
            raise SourceChanged(url, taken, now)

    return check


def same_version(a: Fingerprint, b: Fingerprint | None) -> bool:
    """Whether two observations are of one version (identities compared where both are known)."""
    return b is not None and a.size == b.size and a.modified == b.modified and (
        a.identity is None or b.identity is None or a.identity == b.identity)
