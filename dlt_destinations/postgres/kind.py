"""The `postgres` destination kind: tables in a PostgreSQL schema, loaded by COPY with exact types."""

from __future__ import annotations

from cai_common.kinds import DestinationKind, Probe
from cai_common.probes import postgres_version
from dlt_destinations.postgres.configuration import PostgresDestinationConfig


def probe(config: PostgresDestinationConfig) -> Probe:
    """The server accepts the login."""
    return Probe(config.dsn(dummy_password=True), lambda: postgres_version(config.dsn()))


KIND = DestinationKind(
    code="postgres", config=PostgresDestinationConfig, accepts=frozenset({"rows"}),
    description="PostgreSQL tables loaded by dlt", probe=probe,
)
