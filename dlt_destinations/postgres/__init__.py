"""The `postgres` destination: dlt's postgres destination (COPY for CSV and Arrow), data errors terminal."""

from dlt.common.destination import Destination
from dlt.common.destination.configuration import CsvFormatConfiguration

from dlt_destinations.postgres.client import copied_rows, existing_column_types
from dlt_destinations.postgres.client import postgres as cai_postgres
from dlt_destinations.postgres.configuration import PostgresDestinationConfig
from dlt_destinations.postgres.kind import KIND


def postgres(
    config: PostgresDestinationConfig, *, delimiter: str = ",", encoding: str = "utf-8"
) -> Destination:
    """dlt's postgres destination for a validated config (the DSN never leaves dlt's credentials).

    Args:
        config: the destination config.
        delimiter: field separator of CSV load files that COPY reads (imported source files keep theirs).
        encoding: encoding of those files, passed to COPY's ENCODING option.
    """
    csv_format = CsvFormatConfiguration(delimiter=delimiter, encoding=encoding, include_header=True)
    return cai_postgres(credentials=config.dsn(dummy_password=True), csv_format=csv_format)


__all__ = ["KIND", "PostgresDestinationConfig", "copied_rows", "existing_column_types", "postgres"]
