"""The `s3` source kind: objects under a prefix of an S3 / MinIO bucket, listed and read as files."""

from __future__ import annotations

from typing import Any

from cai_common.kinds import Probe, SourceKind
from dlt_sources.s3.configuration import S3SourceConfig


def probe(config: S3SourceConfig) -> Probe:
    """The bucket can be listed."""
    return Probe(config.bucket_url(), lambda: config.list_bucket(config.bucket))


def from_url(base: str) -> dict[str, Any]:
    """`s3://bucket/prefix` -> the config's location fields (credentials from MINIO_* variables)."""
    bucket, _, prefix = base.split("://", 1)[1].partition("/")
    return {"bucket": bucket, "path": prefix}


KIND = SourceKind(code="s3", config=S3SourceConfig, yields="files", description="S3 bucket prefix",
                  aliases=("minio",), probe=probe, url_schemes=("s3",), from_url=from_url)
