"""The `rest_api` destination."""

from dlt_destinations.rest_api.configuration import RestApiDestinationConfig

__all__ = ["RestApiDestinationConfig"]
