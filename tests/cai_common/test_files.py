"""safe_join and atomic_put against a real local filesystem and a real S3 endpoint (moto over HTTP)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import fsspec
import pytest

from cai_common.files import UnsafePathError, atomic_put, safe_join

MB = 1024 * 1024


@pytest.mark.parametrize("relative", ["../x.csv", "a/../../x.csv", "/etc/passwd", "..", "", "a\\..\\x"])
def test_safe_join_refuses_paths_leaving_the_root(relative: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_join("bucket/out", relative)


def test_safe_join_keeps_nested_relative_paths() -> None:
    assert safe_join("bucket/out/", "2024/q1/./x.csv") == "bucket/out/2024/q1/x.csv"


def test_local_put_renames_into_place_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    local = tmp_path / "src.csv"
    local.write_bytes(b"id\n1\n")
    fs = fsspec.filesystem("file")
    final = str(tmp_path / "dest" / "deep" / "x.csv")
    assert atomic_put(fs, str(local), final) == 5
    assert Path(final).read_bytes() == b"id\n1\n"
    assert sorted(os.listdir(tmp_path / "dest" / "deep")) == ["x.csv"]

    missing = str(tmp_path / "gone.csv")
    with pytest.raises(FileNotFoundError):
        atomic_put(fs, missing, str(tmp_path / "dest" / "y.csv"))
    assert sorted(os.listdir(tmp_path / "dest")) == ["deep"]


def test_s3_single_put_up_to_the_threshold_multipart_above(tmp_path: Path, s3_bucket: dict[str, Any]) -> None:
    fs, bucket = s3_bucket["fs"], s3_bucket["bucket"]
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(20 * MB))
    large.write_bytes(os.urandom(30 * MB))
    atomic_put(fs, str(small), f"{bucket}/small.bin", part_size=5 * MB, multipart_above=25 * MB)
    atomic_put(fs, str(large), f"{bucket}/large.bin", part_size=5 * MB, multipart_above=25 * MB)
    fs.invalidate_cache()
    assert "-" not in fs.info(f"{bucket}/small.bin")["ETag"]
    assert re.search(r"-6\"?$", fs.info(f"{bucket}/large.bin")["ETag"])  # 30 MB in 5 MB parts
    assert fs.cat_file(f"{bucket}/large.bin") == large.read_bytes()
