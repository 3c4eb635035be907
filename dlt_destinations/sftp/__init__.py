"""The `sftp` destination."""

from dlt_destinations.sftp.configuration import SftpDestinationConfig
from dlt_destinations.sftp.kind import KIND

__all__ = ["KIND", "SftpDestinationConfig"]
