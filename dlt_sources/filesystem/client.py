"""The fsspec filesystem a file source lists and reads through."""

from __future__ import annotations

import fsspec
from fsspec import AbstractFileSystem

from dlt_sources.filesystem.configuration import FilesystemSourceConfig, S3SourceConfig


def open_filesystem(config: FilesystemSourceConfig | S3SourceConfig) -> AbstractFileSystem:
    """A filesystem carrying the source's credentials; listings are not cached between runs."""
    if isinstance(config, S3SourceConfig):
        return fsspec.filesystem("s3", skip_instance_cache=True, **config.storage_options())
    return fsspec.filesystem("file")
