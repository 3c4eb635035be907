"""The `rest_api` destination: each file uploaded to an HTTP endpoint (spec 6.5)."""

from dlt_destinations.rest_api.client import Uploaded, UploadRefused, upload_file
from dlt_destinations.rest_api.configuration import RestApiDestinationConfig
from dlt_destinations.rest_api.kind import KIND

__all__ = ["KIND", "RestApiDestinationConfig", "UploadRefused", "Uploaded", "upload_file"]
