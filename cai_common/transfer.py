"""Streaming one file between two fsspec filesystems, verified, never visible half-written.

Bytes move in `CHUNK` pieces (memory stays flat whatever the size) while an MD5 is computed. The
copy is verified before it gets its final name: size always, and with `verify="hash"` the
destination is read back and hashed. Folders and SFTP get a hidden temp name and a rename (local
folders fsync first). S3 gets a multipart upload that is aborted on failure and visible only once
complete. Two S3 prefixes behind one endpoint copy server-side (no bytes through this process).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fsspec import AbstractFileSystem

# 8 MB: S3's part size floor is 5 MB; larger chunks gain little and cost memory per transfer.
CHUNK = 8 * 1024 * 1024


class VerificationError(OSError):
    """The destination does not hold what was sent (size or content hash differs)."""


@dataclass(frozen=True)
class Transferred:
    """What landed: bytes, the content's MD5 (None after a server-side copy) and how it was checked."""

    bytes: int
    md5: str | None
    verified: str


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def is_object_store(fs: AbstractFileSystem) -> bool:
    """True for S3-like filesystems (no rename; an upload appears whole when it completes)."""
    return "s3" in _protocols(fs) or "s3a" in _protocols(fs)


def same_s3_endpoint(a: AbstractFileSystem, b: AbstractFileSystem) -> bool:
    """Whether a server-side copy can go from ``a`` to ``b`` (both S3, one endpoint and one key)."""
    if not (is_object_store(a) and is_object_store(b)):
        return False
    def where(fs: Any) -> tuple[Any, ...]:
        return (fs.client_kwargs.get("endpoint_url"), fs.key)
    return bool(where(a) == where(b))


def _md5_of(fs: AbstractFileSystem, path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with fs.open(path, "rb", block_size=CHUNK) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def transfer_file(
    src_fs: AbstractFileSystem, src_path: str, dst_fs: AbstractFileSystem, final_path: str, *,
    verify: Literal["hash", "size"] = "hash", part_size: int = CHUNK, atomic_rename: bool = True,
) -> Transferred:
    """Copy ``src_path`` to ``final_path``; on any failure nothing is left under the final name.

    Args:
        verify: ``hash`` reads the destination back and compares MD5s; ``size`` compares sizes only.
        part_size: multipart part size on S3.
        atomic_rename: write to a temp name and rename (folders, SFTP); False writes in place for
            servers that cannot rename.

    Raises:
        VerificationError: the destination's size or hash differs (the copy is removed).
    """
    expected = src_fs.size(src_path)
    parent = posixpath.dirname(final_path)
    if parent and not is_object_store(dst_fs):
        dst_fs.makedirs(parent, exist_ok=True)
    if same_s3_endpoint(src_fs, dst_fs):
        dst_fs.copy(src_path, final_path)
        stored = dst_fs.size(final_path)
        if stored != expected:
            dst_fs.rm(final_path)
            raise VerificationError(f"`{final_path}`: server-side copy holds {stored} bytes of {expected}")
        return Transferred(stored, None, "size (server-side copy)")
    rename = atomic_rename and not is_object_store(dst_fs)
    target = f"{parent}/.{posixpath.basename(final_path)}.{uuid.uuid4().hex}.tmp" if rename else final_path
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    out = dst_fs.open(target, "wb", block_size=part_size) if is_object_store(dst_fs) else dst_fs.open(target, "wb")
    try:
        with src_fs.open(src_path, "rb", block_size=CHUNK) as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        out.close()
        stored = dst_fs.size(target)
        if stored != size or size != expected:
            raise VerificationError(f"`{final_path}`: stored {stored} bytes, read {size}, source has {expected}")
        if verify == "hash" and _md5_of(dst_fs, target) != digest.hexdigest():
            raise VerificationError(f"`{final_path}`: content hash differs from the source's")
        if "file" in _protocols(dst_fs):
            import os

            with open(target, "rb") as f:  # the bytes reach the disk (or NFS server) before the name
                os.fsync(f.fileno())
        if target != final_path:
            dst_fs.mv(target, final_path)
    except BaseException:
        if not out.closed:
            if is_object_store(dst_fs):
                out.discard()  # aborts the multipart upload: nothing is committed
                out.closed = True
            else:
                with contextlib.suppress(Exception):  # the temp name is removed just below
                    out.close()
        if dst_fs.exists(target):
            dst_fs.rm(target)
        raise
    return Transferred(size, digest.hexdigest(), verify)
