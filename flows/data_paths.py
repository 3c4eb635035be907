"""Data paths: which dlt resource feeds which dlt destination, keyed by (source type, destination type).

Each path builds a source and a destination from the connector's typed config and runs one dlt
pipeline named `connector_<id>`; the paths live in `paths_postgres` (rows into tables) and
`paths_files` (whole files: exports and transfers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from cai_common import UnsupportedPathError
from flows.connector_config import ConnectorConfig
from flows.pipelines import PathOutcome, pipelines_dir

__all__ = ["DATA_PATHS", "PathOutcome", "data_path_for", "pipelines_dir"]


def _path(module: str, name: str) -> Callable[[ConnectorConfig], PathOutcome]:
    """A path imported when a connector first runs it: a transfer never loads pyarrow or connectorx."""

    def run(connector: ConnectorConfig) -> PathOutcome:
        path: Callable[[ConnectorConfig], PathOutcome] = getattr(importlib.import_module(module), name)
        return path(connector)

    run.__name__ = run.__qualname__ = name
    return run


files_to_postgres = _path("flows.paths_postgres", "files_to_postgres")
query_to_postgres = _path("flows.paths_postgres", "query_to_postgres")
query_to_files = _path("flows.paths_files", "query_to_files")
files_transfer = _path("flows.paths_transfers", "files_transfer")

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
