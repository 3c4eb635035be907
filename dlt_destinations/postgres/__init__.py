"""The `postgres` destination: dlt's own postgres destination, which loads Arrow batches with COPY."""

import dlt
from dlt.common.destination import Destination

from dlt_destinations.postgres.configuration import PostgresDestinationConfig


def postgres(config: PostgresDestinationConfig) -> Destination:
    """dlt's postgres destination for a validated config (the DSN never leaves dlt's credentials)."""
    return dlt.destinations.postgres(credentials=config.dsn(dummy_password=True))


__all__ = ["PostgresDestinationConfig", "postgres"]
