"""Progress of a run, as bytes moved: the data paths report it, whoever watches the run shows it.

Writers call `advance(n)` per piece (a transfer's 4 MB chunks, a COPY's 1 MB reads). Nothing is
shown unless a watcher is installed with `watching(...)`: `cai run` on a terminal draws a bar;
a Prefect flow run logs a line every `LOG_EVERY` seconds; tests and other callers see nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

LOG_EVERY = 30.0
"""Seconds between progress lines in a log."""

_lock = threading.Lock()
_watchers: list[Callable[[int], None]] = []


def advance(nbytes: int) -> None:
    """Report ``nbytes`` more moved (from any thread)."""
    if _watchers:
        with _lock:
            for watcher in list(_watchers):
                watcher(nbytes)


@contextlib.contextmanager
def watching(watcher: Callable[[int], None]) -> Iterator[None]:
    """Call ``watcher(nbytes)`` for every advance while the block runs."""
    with _lock:
        _watchers.append(watcher)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(watcher)


def logging_every(logger: Any, label: str, every: float = LOG_EVERY) -> Callable[[int], None]:
    """A watcher logging `label: N MB moved (R MB/s)` at most every ``every`` seconds."""
    started = last = time.monotonic()
    total = 0

    def watch(nbytes: int) -> None:
        nonlocal last, total
        total += nbytes
        now = time.monotonic()
        if now - last >= every:
            last = now
            logger.info("%s: %.0f MB moved (%.1f MB/s)", label, total / 1e6, total / 1e6 / max(now - started, 1e-9))

    return watch


class Counted:
    """A readable (``read(size)``) that reports what is read through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.inner.read(size)
        advance(len(data))
        return data
