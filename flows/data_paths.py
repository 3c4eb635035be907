"""Data paths: which dlt resource feeds which dlt destination, keyed by (source type, destination type).

Each path builds a source and a destination from the connector's typed config and runs one dlt
pipeline named `connector_<id>`; the paths live in `paths_postgres` (rows into tables) and
`paths_files` (whole files: exports and transfers).
"""

from __future__ import annotations

from collections.abc import Callable

from cai_common import UnsupportedPathError
from flows.connector_config import ConnectorConfig
from flows.paths_files import files_transfer, query_to_files
from flows.paths_postgres import files_to_postgres, load_csv_files, query_to_postgres
from flows.pipelines import PathOutcome, pipelines_dir

__all__ = ["DATA_PATHS", "PathOutcome", "data_path_for", "load_csv_files", "pipelines_dir"]


DATA_PATHS: dict[tuple[str, str], Callable[[ConnectorConfig], PathOutcome]] = {
    ("filesystem", "postgres"): files_to_postgres,
    ("s3", "postgres"): files_to_postgres,
    ("sql_database", "postgres"): query_to_postgres,
    ("sql_database", "nfs"): query_to_files,
    ("sql_database", "s3"): query_to_files,
    ("sql_database", "sftp"): query_to_files,
    **{(src, dst): files_transfer for src in ("filesystem", "s3") for dst in ("nfs", "s3", "sftp", "rest_api")},
}
"""(canonical source type, canonical destination type) -> the path that runs it."""


def data_path_for(connector: ConnectorConfig) -> Callable[[ConnectorConfig], PathOutcome]:
    """The path for a connector's types, or UnsupportedPathError listing the supported pairs."""
    try:
        return DATA_PATHS[(connector.source_type, connector.destination_type)]
    except KeyError:
        raise UnsupportedPathError(
            connector.connector_id,
            connector.source_type,
            connector.destination_type,
            [f"{s} -> {d}" for s, d in DATA_PATHS],
        ) from None
