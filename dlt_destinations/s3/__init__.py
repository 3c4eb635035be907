"""The `s3` destination."""

from dlt_destinations.s3.configuration import S3DestinationConfig

__all__ = ["S3DestinationConfig"]
