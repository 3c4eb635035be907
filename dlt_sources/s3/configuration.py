"""Typed config of the S3 / MinIO source (spec 5.2): objects under a prefix, read as files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from cai_common import ConnectorConfigError
from dlt_destinations.s3.credentials import S3Credentials
from dlt_sources.filesystem.configuration import FileSourceOptions

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class S3SourceConfig(FileSourceOptions, S3Credentials):
    """Objects under a prefix of an S3/MinIO bucket."""

    bucket: str = Field(..., min_length=1, description="bucket name")
    path: str = Field("", description="prefix inside the bucket, e.g. incoming")

    def default_settle_seconds(self) -> float:
        """0: an object is listed only once its upload completed, whole."""
        return 0.0

    def bucket_url(self) -> str:
        """The fsspec URL of the prefix."""
        prefix = self.path.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def location(self) -> str:
        """The endpoint and the prefix's URL."""
        return f"{self.endpoint()} {self.bucket_url()}"

    def open_filesystem(self) -> AbstractFileSystem:
        """An s3fs filesystem with the source's credentials, every request bounded."""
        fs: AbstractFileSystem = self.filesystem()
        return fs

    def ensure_location(self, fs: AbstractFileSystem, connector_id: int | None = None) -> None:
        if not fs.exists(self.bucket):
            raise ConnectorConfigError(connector_id, "source", "bucket",
                                       f"`{self.bucket}` does not exist at {self.endpoint()} (or cannot be listed)")
