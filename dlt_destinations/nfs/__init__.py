"""The `nfs` destination."""

from dlt_destinations.nfs.configuration import NfsDestinationConfig

__all__ = ["NfsDestinationConfig"]
