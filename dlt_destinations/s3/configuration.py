"""Typed config of the S3/MinIO destination (spec 6.2)."""

from __future__ import annotations

from pydantic import Field

from dlt_destinations.s3.credentials import S3Credentials


class S3DestinationConfig(S3Credentials):
    """Objects written under a prefix of an S3/MinIO bucket."""

    bucket: str = Field(..., min_length=1, description="bucket name")
    prefix: str = Field("", description="key prefix, e.g. processed/")
    chunk_size_mb: int = Field(8, ge=5, le=5120, description="multipart part size in MB (S3 minimum is 5)")

    def location(self) -> str:
        """The endpoint, bucket and prefix."""
        return f"{self.endpoint()} s3://{self.bucket}/{self.prefix.strip('/')}"
