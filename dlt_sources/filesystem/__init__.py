"""File sources: folders and S3 prefixes listed by dlt's filesystem resource, CSVs read as Arrow batches."""

from dlt_sources.filesystem.client import open_filesystem
from dlt_sources.filesystem.configuration import CsvOptions, FilesystemSourceConfig, S3SourceConfig
from dlt_sources.filesystem.readers import CsvFileError, FileReport, ReadReport, csv_tables, table_name_for

__all__ = [
    "CsvFileError",
    "CsvOptions",
    "FileReport",
    "FilesystemSourceConfig",
    "ReadReport",
    "S3SourceConfig",
    "csv_tables",
    "open_filesystem",
    "table_name_for",
]
