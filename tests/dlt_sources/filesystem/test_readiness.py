"""Readiness on real files: when a listed file is taken, how long a run waits, markers, and the config's edges.

The end-to-end cases, with a producer process still writing, are in `tests/flows/test_readiness.py`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from dlt.common.storages.fsspec_filesystem import glob_files

from cai_common import ConnectorConfigError
from cai_common.file_versions import SourceChanged, guard, observe
from dlt_sources.filesystem import FilesystemSourceConfig
from dlt_sources.filesystem.readiness import Readiness, ReadyFiles
from dlt_sources.s3 import S3SourceConfig


def _config(raw: dict[str, Any]) -> FilesystemSourceConfig:
    config = FilesystemSourceConfig.parse({"path": "/data", **raw}, connector_id=7, side="source")
    assert isinstance(config, FilesystemSourceConfig)
    return config


def _take(folder: Path, readiness: Readiness) -> tuple[list[str], list[tuple[str, str]], list[float]]:
    """(names taken, (name, reason) left, the waits asked for)."""
    waits: list[float] = []
    fs = fsspec.filesystem("file")
    ready = ReadyFiles(fs, readiness, sleep=lambda s: (waits.append(s), time.sleep(s)))
    taken = ready.take(glob_files(fs, str(folder), "*"))
    return (sorted(t.file["file_name"] for t in taken),
            sorted((n.file_url.rsplit("/", 1)[1], n.reason) for n in ready.not_ready), waits)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_file_settled_long_ago_is_taken_without_waiting(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("a\n1\n")
    _age(tmp_path / "old.csv", 60)
    assert _take(tmp_path, Readiness(5)) == (["old.csv"], [], [])


def test_a_young_file_is_taken_once_it_stayed_unchanged_for_the_settle_time(tmp_path: Path) -> None:
    (tmp_path / "young.csv").write_text("a\n1\n")
    _age(tmp_path / "young.csv", 0.5)
    names, left, waits = _take(tmp_path, Readiness(1.5))
    assert names == ["young.csv"] and left == []
    assert len(waits) == 1 and 0.8 < waits[0] <= 1.0  # only until it is 1.5 s old


def test_a_modification_time_in_the_future_waits_the_whole_settle_time(tmp_path: Path) -> None:
    """A file server whose clock is ahead: the file must stay unchanged for all of `settle_seconds`."""
    (tmp_path / "ahead.csv").write_text("a\n1\n")
    _age(tmp_path / "ahead.csv", -30)
    names, _, waits = _take(tmp_path, Readiness(1))
    assert names == ["ahead.csv"] and waits == [pytest.approx(1, abs=0.05)]


def test_a_file_written_during_the_wait_is_left_for_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "growing.csv"
    path.write_text("a\n1\n")
    fs = fsspec.filesystem("file")

    def producer_writes(seconds: float) -> None:
        with open(path, "a") as out:
            out.write("2\n")

    ready = ReadyFiles(fs, Readiness(1), sleep=producer_writes)
    assert ready.take(glob_files(fs, str(tmp_path), "*")) == []
    assert [n.reason for n in ready.not_ready] == ["still being written (size 4 -> 6 bytes, modification time within "
                                                   "1 s)"]


def test_per_file_markers_and_what_counts_as_a_marker(tmp_path: Path) -> None:
    for name in ("scan.dcm", "scan.dcm.done", "notes.dcm", "report.pdf", "report.done"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("scan.dcm", "notes.dcm", "report.pdf"):
        _age(tmp_path / name, 10)
    assert _take(tmp_path, Readiness(0, "{name}.done")) == (
        ["scan.dcm"], [("notes.dcm", "waiting for its ready marker `notes.dcm.done`"),
                       ("report.pdf", "waiting for its ready marker `report.pdf.done`")], [])
    assert _take(tmp_path, Readiness(0, "{stem}.done"))[0] == ["report.pdf"]


def test_a_marker_older_than_its_file_speaks_for_an_earlier_version(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / "part-0.csv").write_bytes(b"a\n1\n")
    _age(tmp_path / "_SUCCESS", 30)
    names, left, _ = _take(tmp_path, Readiness(0, "_SUCCESS"))
    assert names == [] and left == [("part-0.csv", "modified after its ready marker `_SUCCESS` was written")]
    (tmp_path / "_SUCCESS").touch()
    assert _take(tmp_path, Readiness(0, "_SUCCESS"))[0] == ["part-0.csv"]


def test_the_guard_names_what_changed_and_never_the_content(tmp_path: Path) -> None:
    path = tmp_path / "mrn_list.csv"
    path.write_text("mrn\n08123\n")
    fs = fsspec.filesystem("file")
    taken = observe(fs, str(path))
    assert taken is not None
    guard(fs, str(path), taken)()  # unchanged: nothing raised
    path.write_text("mrn\n00501\n")  # same size, rewritten: a new modification time
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(SourceChanged) as caught:
        guard(fs, str(path), taken)()
    assert "modification time" in str(caught.value) and "00501" not in str(caught.value)
    os.replace(tmp_path / "mrn_list.csv", tmp_path / "old.csv")
    (tmp_path / "mrn_list.csv").write_text("mrn\n08123\n")
    with pytest.raises(SourceChanged, match="identity"):
        guard(fs, str(path), taken)()


def test_settle_defaults_per_kind_and_the_worker_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAI_SETTLE_SECONDS", raising=False)
    assert _config({}).readiness() == Readiness(5.0)
    assert _config({"ready_marker": "{name}.done"}).readiness() == Readiness(0.0, "{name}.done")
    assert _config({"ready_marker": "_SUCCESS", "settle_seconds": 2}).readiness() == Readiness(2.0, "_SUCCESS")
    s3 = S3SourceConfig.parse({"bucket": "b", "aws_access_key_id": "k", "aws_secret_access_key": "s"},
                              connector_id=7, side="source")
    assert isinstance(s3, S3SourceConfig) and s3.readiness() == Readiness(0.0)
    monkeypatch.setenv("CAI_SETTLE_SECONDS", "30")
    assert _config({}).readiness() == Readiness(30.0)
    assert _config({"settle_seconds": 0}).readiness() == Readiness(0.0)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"settle_seconds": -1}, "source `settle_seconds`"),
    ({"settle_seconds": "soon"}, "source `settle_seconds`"),
    ({"ready_marker": "../done"}, "must be a file name beside the files"),
    ({"ready_marker": "{name"}, "must be a file name beside the files"),
    ({"ready_marker": "{name}"}, "must differ from the file's own name"),
])
def test_bad_readiness_settings_name_the_connector_and_the_field(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        _config(raw)
    assert str(caught.value).startswith("connector 7: source `")
    assert expected in str(caught.value)
