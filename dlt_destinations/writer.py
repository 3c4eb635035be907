"""The one way a file is written to a destination: streamed, verified, never visible half-written.

Bytes move in pieces of a few MB (memory stays flat whatever the size); reading, hashing and writing run
on their own threads at once. The copy is verified before it gets its final name: size always, and
with `verify="hash"` against the source's SHA-256: a local copy is read back while it is written and
compared byte for byte, a remote one is hashed by its server where it can, else read back after the
write. Filesystems with rename get a hidden temp name (`.<name>.<32 hex>.tmp`) and a rename; a
local copy is sent to the disk while it is written (`cai_common.disk.Flusher`) and fsynced before
the rename, and may hard-link a file the caller owns. Object stores (`FileTarget.object_store`) get
a multipart upload that is aborted on failure and visible only once complete. A kind may offer a
server-side copy (`copy_within`).

What a kind contributes is declared on its `FileTarget`; this module names no kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fsspec import AbstractFileSystem

from cai_common import CaiError, disk, progress

# Pieces of 1 MB (SFTP keeps four writes in flight: `SftpFile`). Measured moving 1 GiB from
# S3 (moto) to a folder with the hash and the read-back on their own threads: peak RSS 180 MB with 4 MB
# pieces, 147 MB with 1 MB, no slower (pieces that stay in the CPU's cache while they are hashed and
# compared).
CHUNK = 1024 * 1024
# Object-store writes: 8 MB multipart parts unless the destination says otherwise.
PART_SIZE = 8 * 1024 * 1024


class UnsafePathError(CaiError, ValueError):
    """A relative path that would leave its destination root (``..``, an absolute path)."""


class VerificationError(CaiError, OSError):
    """The destination does not hold what was sent (size or content hash differs)."""


def safe_join(root: str, relative: str) -> str:
    """``root/relative``, refusing any ``relative`` that would land outside ``root``."""
    if relative.startswith("/") or "\\" in relative:
        raise UnsafePathError(f"`{relative}` must be a relative path under `{root}`")
    normal = posixpath.normpath(relative)
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise UnsafePathError(f"`{relative}` would escape `{root}`")
    return f"{root.rstrip('/')}/{normal}"


def open_read(fs: AbstractFileSystem, path: str) -> Any:
    """Open for streaming reads: the filesystem's `open_stream` when its kind offers one (one request
    per object), else its own `open` (SFTP servers cap a read's size; sshfs negotiates it)."""
    stream = getattr(fs, "open_stream", None)
    return stream(path) if stream is not None else fs.open(path, "rb")


def _is_local(fs: AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


@dataclass(frozen=True)
class Transferred:
    """What landed: bytes, the content's SHA-256 (None after a server-side copy or a link) and how it was checked."""

    bytes: int
    sha256: str | None
    verified: str


@dataclass(frozen=True)
class FileTarget:
    """Where a file destination writes, and how (declared by its kind).

    Attributes:
        name: the dlt destination's name.
        fs, root: the fsspec filesystem and the folder (or bucket/prefix) under it.
        object_store: uploads appear whole when they complete: no temp name, no folders to create.
        atomic_rename: write a temp name, then rename; False writes in place (servers that cannot rename).
        part_size: multipart part size on an object store.
        multipart_above: object stores upload files up to this size in one request.
        reopen: a new connection, to remove a partial file when the session that wrote it dropped.
        copy_within: a server-side copy ``(src_fs, src_path, final_path) -> bool`` (False: not possible).
        remote_sha256: the server's own SHA-256 of a written file, or None when it cannot say; with
            ``verify="hash"`` it replaces reading the file back over the link.
    """

    name: str
    fs: AbstractFileSystem
    root: str
    object_store: bool = False
    atomic_rename: bool = True
    part_size: int = PART_SIZE
    multipart_above: int | None = None
    reopen: Callable[[], AbstractFileSystem] | None = None
    copy_within: Callable[[AbstractFileSystem, str, str], bool] | None = None
    remote_sha256: Callable[[str], str | None] | None = None

    def location(self) -> str:
        """The root's URL."""
        return str(self.fs.unstrip_protocol(self.root))


def temp_name(final_path: str) -> str:
    """The hidden name a file is written under before it is renamed into place."""
    parent = posixpath.dirname(final_path)
    return f"{parent}/.{posixpath.basename(final_path)}.{uuid.uuid4().hex}.tmp"


_TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.tmp$")


@dataclass
class DebrisSweeper:
    """Removes temp files dropped sessions left (`.<name>.<32 hex>.tmp`) before a file is written again.

    One listing per directory per run, not one per file: a directory of thousands of files is
    listed once. Only the temp files of the name about to be written are removed, so another
    connector's transfer into the same directory keeps its own.
    """

    fs: AbstractFileSystem
    _temps: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def clear_for(self, final_path: str) -> list[str]:
        """Remove the leftover temp files of ``final_path``; returns their paths."""
        parent, name = posixpath.dirname(final_path), posixpath.basename(final_path)
        if parent not in self._temps:
            try:
                listing = self.fs.ls(parent, detail=False) if self.fs.isdir(parent) else []
            except FileNotFoundError:
                listing = []
            by_name: dict[str, list[str]] = {}
            for path in listing:
                found = _TEMP.match(posixpath.basename(str(path).rstrip("/")))
                if found:
                    by_name.setdefault(found["name"], []).append(str(path))
            self._temps[parent] = by_name
        removed = []
        for path in self._temps[parent].pop(name, []):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)
                removed.append(path)
        return removed


def _remove_partial(fs: AbstractFileSystem, path: str, reopen: Callable[[], AbstractFileSystem] | None) -> None:
    """Remove what a failed write left at ``path``; over a fresh connection when the first one dropped."""
    connections: list[Callable[[], AbstractFileSystem]] = [lambda: fs, *([reopen] if reopen else [])]
    for connect in connections:
        try:
            current = connect()
            if current.exists(path):
                current.rm(path)
            return
        except Exception:  # the session is gone: try a new one; temp names left are removed next run
            continue


def _link(source: str, target: str) -> bool:
    """Hard-link a local file into place (same filesystem); False when it must be copied instead."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def write_file(
    src_fs: AbstractFileSystem, src_path: str, target: FileTarget, final_path: str, *,
    verify: Literal["hash", "size"] = "hash", link: bool = False, before_commit: Callable[[], None] | None = None,
) -> Transferred:
    """Copy ``src_path`` to ``final_path`` on the target; on any failure nothing is left under the final name.

    Args:
        verify: ``hash`` reads the destination back and compares SHA-256s; ``size`` compares sizes only.
        link: hard-link instead of copying when both sides are one local disk. Only for a source the
            caller owns and will delete (an export): both names share the same bytes.
        before_commit: called once every byte was read, before the copy can appear under its final name
            (before a rename, before an object store completes its upload); whatever it raises discards the
            copy, as any failure does. Transfers check there that the source is still the file they took.

    Raises:
        VerificationError: the destination's size or hash differs (the copy is removed).
    """
    dst_fs = target.fs
    expected = src_fs.size(src_path)
    parent = posixpath.dirname(final_path)
    if parent and not target.object_store:  # on an object store a prefix needs no folder
        dst_fs.makedirs(parent, exist_ok=True)
    if target.copy_within is not None and target.copy_within(src_fs, src_path, final_path):
        try:
            stored = dst_fs.size(final_path)
            if stored != expected:
                raise VerificationError(f"`{final_path}`: server-side copy holds {stored} bytes of {expected}")
            if before_commit is not None:
                before_commit()
        except BaseException:
            dst_fs.rm(final_path)
            raise
        return Transferred(stored, None, "size (server-side copy)")
    local = _is_local(dst_fs)
    rename = target.atomic_rename and not target.object_store
    temp = temp_name(final_path) if rename else final_path
    if link and local and rename and _is_local(src_fs) and _link(src_path, temp):
        return _finish_link(dst_fs, temp, final_path, expected)
    if target.object_store:
        single = target.multipart_above is not None and expected <= target.multipart_above
        # s3fs-like writers upload in one request below one block: size the block accordingly.
        out = dst_fs.open(temp, "wb", block_size=max(target.part_size, expected + 1) if single else target.part_size)
    else:
        out = dst_fs.open(temp, "wb")
    sent = _Hasher()
    # A local copy is read back a chunk behind the writer and compared with what was written (from
    # the page cache, as a read-back after closing would be); other destinations are hashed after.
    read_back = _ReadBack(temp) if verify == "hash" and local else None
    flusher = disk.Flusher(temp) if local else None
    size = 0
    try:
        with open_read(src_fs, src_path) as source:
            for chunk in _read_ahead(source, CHUNK):
                sent.feed(chunk)
                out.write(chunk)
                size += len(chunk)
                if local:  # the OS has the bytes before they are read back or synced
                    out.flush()
                if flusher is not None:
                    flusher.written(size)
                if read_back is not None:
                    read_back.feed(chunk)
                progress.advance(len(chunk))
        if target.object_store and before_commit is not None:
            before_commit()  # closing completes the upload: the last moment nothing is visible yet
        out.close()
        stored = dst_fs.size(temp)
        if stored != size or size != expected:
            raise VerificationError(f"`{final_path}`: stored {stored} bytes, read {size}, source has {expected}")
        how: str = verify
        if read_back is not None:
            read_back.finish()  # raises VerificationError on the first byte that differs
        elif verify == "hash":
            remote = target.remote_sha256(temp) if target.remote_sha256 is not None else None
            how = "hash (server)" if remote else "hash"
            if (remote or _sha256_of(dst_fs, temp)) != sent.hexdigest():
                raise VerificationError(f"`{final_path}`: content hash differs from the source's")
        if flusher is not None:
            flusher.finish()  # the bytes written so far are on disk (or the NFS server)
        if local:
            with open(temp, "rb") as f:  # the rest reach the disk before the name
                os.fsync(f.fileno())
        if before_commit is not None and not target.object_store:
            before_commit()
        if temp != final_path:
            dst_fs.mv(temp, final_path)
    except BaseException:
        for worker in (sent, read_back, flusher):
            if worker is not None:
                worker.stop()
        if not out.closed:
            discard = getattr(out, "discard", None)
            if target.object_store and discard is not None:
                try:
                    discard()  # aborts the multipart upload: nothing is committed
                except Exception:  # the endpoint is gone too: the store expires the upload by its rules
                    pass
                finally:
                    # Never flushed again: an unclosed upload flushes its buffer when garbage-collected,
                    # at interpreter exit too, where a dead link would hold the process for good.
                    out.closed = True
            else:
                with contextlib.suppress(Exception):  # the temp name is removed just below
                    out.close()
        if not target.object_store:
            _remove_partial(dst_fs, temp, target.reopen)
        raise
    return Transferred(size, sent.hexdigest(), how)


_AHEAD = 2
"""Chunks read ahead of the writer (and queued for a hasher): memory stays at a few `CHUNK`s."""


def _read_ahead(source: Any, chunk_size: int) -> Iterator[bytes]:
    """The source's chunks, read on a thread while the caller writes the previous ones.

    Socket reads, SHA-256 and file writes all release the GIL, so reading, hashing and writing
    overlap instead of adding up. A failed read is raised here; a caller that stops early stops
    the thread at its next chunk.
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set() and (chunk := source.read(chunk_size)):
                while not stop.is_set():
                    try:
                        chunks.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
            chunks.put(None)
        except BaseException as exc:  # handed to the writer, which raises it
            chunks.put(exc)

    reader = threading.Thread(target=read, name="cai-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                chunks.get_nowait()  # unblock a reader waiting to put
        reader.join(60)


class _Behind:
    """Chunks handled on a thread of their own, at most `_AHEAD` behind the writer.

    hashlib, file reads and comparisons of large bytes release the GIL or take microseconds, so
    this work overlaps the transfer's reads and writes instead of adding to them. An error is
    kept and raised by `finish`; the thread always drains, so the writer never blocks on it.
    """

    def __init__(self, name: str) -> None:
        self._items: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def feed(self, chunk: bytes) -> None:
        self._items.put(chunk)

    def handle(self, chunk: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the thread holds (runs on the thread, at its end)."""

    def _run(self) -> None:
        try:
            while (chunk := self._items.get()) is not None:
                if self._error is None:
                    self.handle(chunk)
        except BaseException as exc:
            self._error = exc
            while self._items.get() is not None:
                pass
        finally:
            self.close()

    def finish(self) -> None:
        """Wait for every chunk fed to be handled; raise what failed."""
        if not self._done:
            self._done = True
            self._items.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the thread, ignoring its outcome (the write failed)."""
        with contextlib.suppress(BaseException):
            self.finish()


class _Hasher(_Behind):
    """The SHA-256 of the chunks sent."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        super().__init__("cai-hash")

    def handle(self, chunk: bytes) -> None:
        self._digest.update(chunk)

    def hexdigest(self) -> str:
        self.finish()
        return self._digest.hexdigest()


class _ReadBack(_Behind):
    """A local file read back through its own descriptor, each chunk compared with the bytes written.

    Comparing costs far less CPU than hashing the copy a second time, and finds the same differences.
    """

    def __init__(self, path: str) -> None:
        self._path, self._fd, self._offset = path, -1, 0
        super().__init__("cai-read-back")

    def handle(self, chunk: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self._path, os.O_RDONLY)
        stored = os.pread(self._fd, len(chunk), self._offset)
        while len(stored) < len(chunk) and (more := os.pread(self._fd, len(chunk) - len(stored),
                                                               self._offset + len(stored))):
            stored += more
        if stored != chunk:
            raise VerificationError(f"`{self._path}`: the bytes read back from {self._offset} differ from those "
                                    "written")
        self._offset += len(chunk)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)


def _finish_link(fs: AbstractFileSystem, temp: str, final_path: str, expected: int) -> Transferred:
    """A hard link in place: fsync, check the size, rename (removing the link on any failure)."""
    try:
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        stored = fs.size(temp)
        if stored != expected:
            raise VerificationError(f"`{final_path}`: stored {stored} bytes of {expected}")
        fs.mv(temp, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return Transferred(expected, None, "size (hard link)")


def _sha256_of(fs: AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with open_read(fs, path) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
