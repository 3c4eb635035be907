"""File sources: folders and S3 prefixes listed by dlt's filesystem resource, CSVs loaded incrementally."""

from dlt_sources.filesystem.client import open_filesystem
from dlt_sources.filesystem.configuration import CsvOptions, FileSourceOptions, FilesystemSourceConfig, S3SourceConfig
from dlt_sources.filesystem.readers import BadFilesError, CsvFileError, read_csv_batches, table_name_for
from dlt_sources.filesystem.resource import LEDGER_KEY, RESOURCE_NAME, FileReport, ReadReport, csv_tables
from dlt_sources.filesystem.staging import stage_csv, supports_fast_path

__all__ = [
    "BadFilesError",
    "LEDGER_KEY",
    "RESOURCE_NAME",
    "CsvFileError",
    "CsvOptions",
    "FileReport",
    "FileSourceOptions",
    "FilesystemSourceConfig",
    "ReadReport",
    "S3SourceConfig",
    "csv_tables",
    "open_filesystem",
    "read_csv_batches",
    "stage_csv",
    "supports_fast_path",
    "table_name_for",
]
