"""The `filesystem` source, and the machinery of every file source: listing by dlt's filesystem resource, CSVs
loaded incrementally.

Config, reports and errors load at once; the CSV readers (pyarrow) load on first use, so a file
transfer never pays for them (about 30 MB of resident memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_common.lazy import lazy_exports
from dlt_sources.filesystem.client import ensure_location, open_filesystem
from dlt_sources.filesystem.configuration import CsvOptions, FileSourceOptions, FilesystemSourceConfig
from dlt_sources.filesystem.kind import KIND
from dlt_sources.filesystem.reports import (
    LEDGER_KEY,
    RESOURCE_NAME,
    TYPED_BESIDE_LOAD,
    BadFilesError,
    CsvFileError,
    FileReport,
    ReadReport,
)

if TYPE_CHECKING:
    from dlt_sources.filesystem.readers import read_csv_batches, table_name_for
    from dlt_sources.filesystem.resource import csv_tables
    from dlt_sources.filesystem.staging import pass_again, pinned_types, stage_csv, supports_fast_path

__getattr__ = lazy_exports(__name__, {
    "read_csv_batches": "readers", "table_name_for": "readers", "csv_tables": "resource",
    "stage_csv": "staging", "supports_fast_path": "staging", "pass_again": "staging", "pinned_types": "staging",
})


__all__ = [
    "KIND", "BadFilesError", "LEDGER_KEY", "RESOURCE_NAME", "TYPED_BESIDE_LOAD", "CsvFileError", "CsvOptions",
    "FileReport", "FileSourceOptions", "FilesystemSourceConfig", "ReadReport", "csv_tables", "ensure_location",
    "open_filesystem", "pass_again", "pinned_types", "read_csv_batches", "stage_csv", "supports_fast_path",
    "table_name_for",
]
