"""File destinations as fsspec filesystems: a folder, an S3 prefix or an SFTP directory."""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from dlt_destinations.nfs import NfsDestinationConfig
from dlt_destinations.s3 import S3DestinationConfig
from dlt_destinations.sftp import SftpDestinationConfig
from dlt_destinations.sftp.client import open_sftp
from flows.connector_config import ConnectorConfig


def file_target(connector: ConnectorConfig) -> tuple[str, AbstractFileSystem, str, dict[str, Any]]:
    """(destination name, fsspec filesystem, root path, put options) of a file destination."""
    target = connector.destination
    if isinstance(target, NfsDestinationConfig):
        # The export is our own temp file: link it into place when the folder is on the same disk.
        return "nfs", fsspec.filesystem("file"), target.path.rstrip("/"), {"allow_link": True}
    if isinstance(target, SftpDestinationConfig):
        return "sftp", open_sftp(target), target.path.rstrip("/") or "/", {}
    assert isinstance(target, S3DestinationConfig)
    # fixed_upload_size: every multipart part is exactly `chunk_size_mb` (the last one smaller)
    fs = target.filesystem(fixed_upload_size=True)
    root = f"{target.bucket}/{target.prefix.strip('/')}".rstrip("/")
    # The spec's rule (6.2): multipart above 25 MB, in parts of `chunk_size_mb`.
    return "s3", fs, root, {"part_size": target.chunk_size_mb * 1024 * 1024, "multipart_above": 25 * 1024 * 1024}
