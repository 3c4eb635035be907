"""The `nfs` destination."""

from dlt_destinations.nfs.configuration import NfsDestinationConfig
from dlt_destinations.nfs.kind import KIND

__all__ = ["KIND", "NfsDestinationConfig"]
