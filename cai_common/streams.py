"""Load files whose rows arrive as a stream: a placeholder file in the load package stands for them.

A source that can stream its rows straight into the destination (a PostgreSQL query into a
PostgreSQL table) gives dlt a small placeholder load file (the header line) and registers, under the
file's identity (device and inode: dlt hard-links an imported file into its load package), a
function that opens the stream and the COPY format its rows are in (`csv`, or PostgreSQL's own
`text`). The destination's load job looks the file up and, when a stream is registered, reads the
rows from it instead of from the file. Nothing secret is written: the
registry lives in this process only, and a package left by a dead process holds no stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal

CopyFormat = Literal["csv", "text"]
"""The format of a stream's rows, as COPY names it (the placeholder file's header line is always CSV)."""

Opener = Callable[[], AbstractContextManager[Any]]
"""Opens the stream: a context manager yielding an object with ``read(size) -> bytes``."""

_STREAMS: dict[tuple[int, int], tuple[Opener, CopyFormat]] = {}
_KEYS: dict[str, tuple[int, int]] = {}  # path -> identity, to forget a file already removed
_LOCK = threading.Lock()


def _identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def register(path: str | os.PathLike[str], opener: Opener, copy_format: CopyFormat = "csv") -> None:
    """Let the load job of the file at ``path`` (or any hard link of it) read its rows from ``opener``,
    in ``copy_format``."""
    key = _identity(path)
    with _LOCK:
        _STREAMS[key] = (opener, copy_format)
        _KEYS[str(path)] = key


def opener_for(path: str | os.PathLike[str]) -> Opener | None:
    """The stream registered for this file, if any."""
    with _LOCK:
        found = _STREAMS.get(_identity(path))
    return found[0] if found else None


def copy_format_for(path: str | os.PathLike[str]) -> CopyFormat:
    """The COPY format of the stream registered for this file (`csv` when none is)."""
    with _LOCK:
        found = _STREAMS.get(_identity(path))
    return found[1] if found else "csv"


def forget(path: str | os.PathLike[str]) -> None:
    """Drop the registration (the run is over; the file may be gone already)."""
    with _LOCK:
        key = _KEYS.pop(str(path), None)
        if key is not None:
            _STREAMS.pop(key, None)
