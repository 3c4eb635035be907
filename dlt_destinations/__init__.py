"""dlt destinations for every destination type, and the registry that maps a type code to its config model."""

from cai_common.registry import TypeRegistry
from dlt_destinations.nfs import NfsDestinationConfig
from dlt_destinations.postgres import PostgresDestinationConfig
from dlt_destinations.rest_api import RestApiDestinationConfig
from dlt_destinations.s3 import S3DestinationConfig
from dlt_destinations.sftp import SftpDestinationConfig

DESTINATIONS = TypeRegistry(
    side="destination",
    configs={
        "postgres": PostgresDestinationConfig,
        "s3": S3DestinationConfig,
        "sftp": SftpDestinationConfig,
        "nfs": NfsDestinationConfig,
        "rest_api": RestApiDestinationConfig,
    },
    aliases={"minio": "s3", "truenas": "sftp", "filesystem": "nfs", "local": "nfs"},
)
"""Destination type code (and its aliases) -> typed config model."""

__all__ = ["DESTINATIONS"]
