"""The fsspec filesystem a file source lists and reads through."""

from __future__ import annotations

import fsspec
from fsspec import AbstractFileSystem

from cai_common import ConnectorConfigError
from dlt_sources.filesystem.configuration import FilesystemSourceConfig, S3SourceConfig


def open_filesystem(config: FilesystemSourceConfig | S3SourceConfig) -> AbstractFileSystem:
    """A filesystem carrying the source's credentials; listings are not cached between runs."""
    if isinstance(config, S3SourceConfig):
        return config.filesystem()
    return fsspec.filesystem("file")


def ensure_location(
    config: FilesystemSourceConfig | S3SourceConfig, fs: AbstractFileSystem, connector_id: int | None = None
) -> None:
    """Fail unless the folder (or the bucket) exists: a missing one is an unmounted share or a typo, not
    "no files". An existing location with no matching file is fine.

    Raises:
        ConnectorConfigError: naming the connector, the field and the location.
    """
    if isinstance(config, S3SourceConfig):
        if not fs.exists(config.bucket):
            raise ConnectorConfigError(connector_id, "source", "bucket",
                                       f"`{config.bucket}` does not exist at {config.endpoint()} (or cannot be listed)")
        return
    path = config.path.removeprefix("file://")
    if not fs.isdir(path):
        problem = "is a file, not a folder" if fs.exists(path) else "does not exist (an unmounted share?)"
        raise ConnectorConfigError(connector_id, "source", "path", f"`{path}` {problem}")
