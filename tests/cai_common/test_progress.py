"""Progress: writers report bytes; a watcher sees them; a log watcher writes rate lines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

from cai_common import progress
from dlt_destinations.writer import FileTarget, write_file


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


def test_a_written_file_reports_every_byte_to_the_watcher_and_nothing_outside(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)
    (tmp_path / "in.bin").write_bytes(data)
    fs = fsspec.filesystem("file")
    target = FileTarget("nfs", fs, str(tmp_path / "out"))
    seen: list[int] = []
    with progress.watching(seen.append):
        write_file(fs, str(tmp_path / "in.bin"), target, str(tmp_path / "out" / "a.bin"))
    assert sum(seen) == len(data) and len(seen) == 10  # 1 MB pieces
    write_file(fs, str(tmp_path / "in.bin"), target, str(tmp_path / "out" / "b.bin"))  # nobody watching
    assert sum(seen) == len(data)


def test_a_log_watcher_writes_the_amount_and_the_rate() -> None:
    log = _Log()
    with progress.watching(progress.logging_every(log, "connector 7 (labs)", every=0)):
        progress.advance(5_000_000)
        progress.advance(5_000_000)
    assert log.lines[-1].startswith("connector 7 (labs): 10 MB moved (") and log.lines[-1].endswith("MB/s)")


def test_a_counted_reader_reports_what_passes_through(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a,b\n1,2\n")
    seen: list[int] = []
    with progress.watching(seen.append), open(tmp_path / "f", "rb") as f:
        reader = progress.Counted(f)
        assert reader.read(4) == b"a,b\n" and reader.read(100) == b"1,2\n" and reader.read(100) == b""
    assert sum(seen) == 8
