"""The `s3` destination."""

from dlt_destinations.s3.configuration import S3DestinationConfig
from dlt_destinations.s3.kind import KIND

__all__ = ["KIND", "S3DestinationConfig"]
