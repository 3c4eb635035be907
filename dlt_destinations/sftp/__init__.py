"""The `sftp` destination."""

from dlt_destinations.sftp.configuration import SftpDestinationConfig

__all__ = ["SftpDestinationConfig"]
