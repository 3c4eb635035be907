"""A local file's bytes sent to the disk while it is being written.

A file that must be durable before something else happens (its final name appears, a moved source
is deleted) is fsynced first. Left to the end, that fsync waits for the whole file: 1.3-1.5 s per
GiB on a CI machine's disk, after the last byte was written. `Flusher` syncs on a thread of its own
as the file grows, so the final fsync waits for the last few MB.
"""

from __future__ import annotations

import contextlib
import os
import threading

FLUSH_STEP = 32 * 1024 * 1024
"""Written bytes are sent to the disk each time this many more were written."""


class Flusher:
    """`fdatasync` of a file being written, on a thread of its own, every `FLUSH_STEP` bytes.

    The writer calls `written` as it goes and never waits for a sync (fdatasync releases the GIL); it
    calls `finish` before its own final fsync. The thread starts with the first step, so a file
    smaller than one step costs nothing but that final fsync. A sync error is raised by the next
    `written` or by `finish`, so the write fails like any other write error.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = path
        self._wanted = self._synced = 0
        self._wake = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def written(self, size: int) -> None:
        """``size`` bytes are written so far: sync them once a step more than the last sync asked for."""
        if self._error is not None:
            raise self._error
        if size - self._wanted >= FLUSH_STEP:
            with self._wake:
                self._wanted = size
                self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cai-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        fd = -1
        try:
            fd = os.open(self._path, os.O_RDONLY)
            while True:
                with self._wake:
                    while not self._done and self._wanted == self._synced:
                        self._wake.wait()
                    if self._done:
                        return
                    wanted = self._wanted
                os.fdatasync(fd)
                self._synced = wanted
        except BaseException as exc:
            self._error = exc
        finally:
            if fd >= 0:
                os.close(fd)

    def finish(self) -> None:
        """Stop syncing (the caller's fsync does the rest); raise what failed."""
        with self._wake:
            self._done = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the thread, ignoring its outcome (the write failed)."""
        with contextlib.suppress(BaseException):
            self.finish()
