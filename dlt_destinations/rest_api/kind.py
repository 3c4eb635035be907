"""The `rest_api` destination kind: each file uploaded to an HTTP endpoint (spec 6.5)."""

from __future__ import annotations

from cai_common.kinds import DestinationKind, Probe
from dlt_destinations.rest_api.configuration import RestApiDestinationConfig


def upload_target(config: RestApiDestinationConfig) -> object:
    """A `TransferTarget` uploading each file; delivered only on a 2xx to the request that carried it."""
    import requests

    from dlt_destinations.rest_api.client import RestTarget

    return RestTarget(config, requests.Session())


def probe(config: RestApiDestinationConfig) -> Probe:
    """The endpoint answers HTTP at all (nothing is uploaded)."""

    def check() -> str:
        import requests

        response = requests.head(config.url.split("{", 1)[0], timeout=5, allow_redirects=False,
                                 verify=config.tls_verify())
        return f"HTTP {response.status_code}"

    return Probe(config.url, check)


KIND = DestinationKind(
    code="rest_api", config=RestApiDestinationConfig, accepts=frozenset({"uploads"}),
    description="HTTP upload endpoint", probe=probe, upload_target=upload_target,
)
