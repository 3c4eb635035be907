"""The fsspec filesystem a file source lists and reads through (each file kind opens its own)."""

from __future__ import annotations

from fsspec import AbstractFileSystem

from dlt_sources.filesystem.configuration import FileSourceOptions


def open_filesystem(config: FileSourceOptions) -> AbstractFileSystem:
    """A filesystem carrying the source's credentials; listings are not cached between runs."""
    return config.open_filesystem()


def ensure_location(config: FileSourceOptions, fs: AbstractFileSystem, connector_id: int | None = None) -> None:
    """Fail unless the folder (or the bucket) exists (see `FileSourceOptions.ensure_location`)."""
    config.ensure_location(fs, connector_id)
