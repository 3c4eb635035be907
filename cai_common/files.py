"""Moving files safely through fsspec: paths that cannot escape their root, final names only when complete."""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from typing import Any

from fsspec import AbstractFileSystem


class UnsafePathError(ValueError):
    """A relative path that would leave its destination root (``..``, an absolute path)."""


def safe_join(root: str, relative: str) -> str:
    """``root/relative``, refusing any ``relative`` that would land outside ``root``."""
    if relative.startswith("/") or "\\" in relative:
        raise UnsafePathError(f"`{relative}` must be a relative path under `{root}`")
    normal = posixpath.normpath(relative)
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise UnsafePathError(f"`{relative}` would escape `{root}`")
    return f"{root.rstrip('/')}/{normal}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a local file, read in 4 MB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_put(
    fs: AbstractFileSystem, local_path: str, final_path: str, *, part_size: int | None = None,
    multipart_above: int | None = None, allow_link: bool = False, **put_kwargs: Any,
) -> int:
    """Upload a local file so that ``final_path`` appears only complete; returns the bytes stored.

    Filesystems with rename (local, NFS, SFTP) get a hidden temp name in the same folder, then a
    rename. Object stores (S3) get the object at once: an upload (multipart included) becomes
    visible only when it completes. The stored size is checked against the local file either way.

    Args:
        part_size: multipart part size for object stores.
        multipart_above: object stores upload files up to this size in one request, larger ones in
            parts of ``part_size`` (s3fs alone would switch at twice the part size).
        allow_link: on a local filesystem, hard-link instead of copying when possible. Only for a
            ``local_path`` the caller owns and will delete: both names share the same bytes.
    """
    parent = posixpath.dirname(final_path)
    size = os.path.getsize(local_path)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    object_store = "s3" in protocols
    local = "file" in protocols
    if parent and not object_store:  # on S3 a prefix needs no folder, and makedirs would create buckets
        fs.makedirs(parent, exist_ok=True)
    target = final_path if object_store else f"{parent}/.{posixpath.basename(final_path)}.{uuid.uuid4().hex}.tmp"
    if object_store and part_size:
        single = multipart_above is not None and size <= multipart_above
        # s3fs uploads in one request when the file is under two chunks: size the chunk accordingly.
        put_kwargs["chunksize"] = max(part_size, size // 2 + 1) if single else part_size
    try:
        if not (local and allow_link and _link(local_path, target)):
            fs.put_file(local_path, target, **put_kwargs)
        if local:  # the bytes reach the disk (or the NFS server) before the name does
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        stored = fs.size(target)
        if stored != size:
            raise OSError(f"`{final_path}`: stored {stored} bytes of {size}")
        if target != final_path:
            fs.mv(target, final_path)
    except BaseException:
        if target != final_path and fs.exists(target):
            fs.rm(target)
        raise
    return size


def _link(source: str, target: str) -> bool:
    """Hard-link a local file into place (same filesystem); False when it must be copied instead."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True
