"""Streaming CSV reading through dlt's filesystem resource: encodings, gzip, NULLs, malformed files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dlt.extract.exceptions import ResourceExtractionError

from dlt_sources.filesystem import (
    CsvFileError,
    FilesystemSourceConfig,
    ReadReport,
    csv_tables,
    open_filesystem,
    readers,
)
from tests.awkward import AWKWARD_ROWS, awkward_csv


def _read(folder: Path, pattern: str = "*.csv", **options: Any) -> tuple[pa.Table, ReadReport]:
    """Pull the resource like dlt's extract does; return every batch as one Arrow table."""
    config = FilesystemSourceConfig.parse({"path": str(folder), "file_pattern": pattern, **options},
                                          connector_id=1, side="source")
    report = ReadReport()
    resource = csv_tables(config.bucket_url(), config.file_pattern, fs=open_filesystem(config), options=config,
                          report=report)
    try:
        batches = list(resource)
    except ResourceExtractionError as exc:
        raise exc.__cause__ or exc from None
    return pa.Table.from_batches(batches), report


def test_awkward_values_survive(tmp_path: Path) -> None:
    awkward_csv(tmp_path / "visits.csv")
    table, report = _read(tmp_path)
    rows = table.to_pylist()
    assert [r["note"] for r in rows] == [r[2] or None for r in AWKWARD_ROWS]
    assert rows[3]["name"] is None and rows[3]["amount"] is None
    assert report.rows == len(AWKWARD_ROWS) and report.files[0].status == "loaded"


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    awkward_csv(plain)
    (tmp_path / "visits.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    table, _ = _read(tmp_path, "*.csv.gz")
    assert table.num_rows == len(AWKWARD_ROWS)


def test_latin1_semicolons_and_no_header(tmp_path: Path) -> None:
    (tmp_path / "legacy.csv").write_bytes("1;Müller;São Paulo\n2;Façade;Zürich\n".encode("latin-1"))
    table, _ = _read(tmp_path, encoding="latin-1", delimiter=";", header=False)
    assert table.column(1).to_pylist() == ["Müller", "Façade"]
    assert table.column(2).to_pylist() == ["São Paulo", "Zürich"]


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("\ufeffid,name\n1,a\n".encode())
    table, _ = _read(tmp_path, encoding="utf-8-sig")
    assert table.column_names == ["id", "name"]


def test_empty_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CsvFileError, match=r"file `file://.*empty.csv`: is empty"):
        _read(tmp_path)


def test_column_empty_in_the_first_block_still_reads_later_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)  # several blocks without a large file
    lines = ["id,discharged_at"] + [f"{i}," for i in range(1000)] + ["1000,2024-01-01T00:00:00Z"]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    table, _ = _read(tmp_path)
    values = table.column("discharged_at").to_pylist()
    assert values[-1] == "2024-01-01T00:00:00Z" and values[:1000] == [None] * 1000


def test_later_file_is_cast_to_the_tables_types_when_lossless(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,2.5\n")
    (tmp_path / "b.csv").write_text("id,amount\n2,3\n")
    config = FilesystemSourceConfig.parse({"path": str(tmp_path), "file_pattern": "*.csv"}, connector_id=1,
                                          side="source")
    report = ReadReport()
    resource = csv_tables(config.bucket_url(), "*.csv", fs=open_filesystem(config), options=config, report=report,
                          table_name="amounts")
    batches = list(resource)
    assert {b.schema.field("amount").type for b in batches} == {pa.float64()}
    assert sorted(v for b in batches for v in b.column("amount").to_pylist()) == [2.5, 3.0]


def test_lossy_type_conflict_between_files_names_the_column(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,2\n")
    (tmp_path / "b.csv").write_text("id,amount\n2,lots\n")
    config = FilesystemSourceConfig.parse({"path": str(tmp_path), "file_pattern": "*.csv"}, connector_id=1,
                                          side="source")
    resource = csv_tables(config.bucket_url(), "*.csv", fs=open_filesystem(config), options=config,
                          report=ReadReport(), table_name="amounts")
    with pytest.raises(ResourceExtractionError) as caught:
        list(resource)
    cause = caught.value.__cause__
    assert isinstance(cause, CsvFileError)
    assert "column `amount` reads as string but table `amounts` already holds it as int64" in str(cause)
