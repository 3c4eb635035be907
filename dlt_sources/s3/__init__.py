"""The `s3` source: objects of an S3 / MinIO prefix, through the file-source machinery of `dlt_sources.filesystem`."""

from dlt_sources.s3.configuration import S3SourceConfig
from dlt_sources.s3.kind import KIND

__all__ = ["KIND", "S3SourceConfig"]
