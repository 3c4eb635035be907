"""Data paths: which dlt pipeline joins a source to a destination, chosen by what their kinds can do.

| source yields | destination accepts | path |
|---|---|---|
| `files` | `rows` | `tables.files_to_table`: CSV files into tables |
| `query` | `rows` | `tables.query_to_table`: a query's rows into a table |
| `query` | `files` | `exports.query_to_files`: a query as one CSV file |
| `files` | `files` or `uploads` | `transfers.files_transfer`: files moved or copied, verified |

Each path runs one dlt pipeline (`pipelines.pipeline_name_for`). A path's module is imported when a
connector first runs it: a transfer never loads pyarrow or connectorx.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from cai_common import UnsupportedPathError
from cai_common.kinds import DestinationKind, SourceKind
from dlt_destinations import DESTINATIONS
from dlt_sources import SOURCES
from flows.paths.pipelines import PathOutcome, pipelines_dir
from flows.store.connector_config import ConnectorConfig

__all__ = ["PathOutcome", "data_path_for", "pipelines_dir", "supported_pairs"]

DataPath = Callable[[ConnectorConfig], PathOutcome]


def _path(module: str, name: str) -> DataPath:
    """A path imported when a connector first runs it."""

    def run(connector: ConnectorConfig) -> PathOutcome:
        path: DataPath = getattr(importlib.import_module(f"flows.paths.{module}"), name)
        return path(connector)

    run.__name__ = run.__qualname__ = name
    return run


files_to_table = _path("tables", "files_to_table")
query_to_table = _path("tables", "query_to_table")
query_to_files = _path("exports", "query_to_files")
files_transfer = _path("transfers", "files_transfer")


def path_between(source: SourceKind, destination: DestinationKind) -> DataPath | None:
    """The path joining two kinds, or None."""
    if "rows" in destination.accepts:
        return files_to_table if source.yields == "files" else query_to_table
    if source.yields == "query" and "files" in destination.accepts:
        return query_to_files
    if source.yields == "files" and destination.accepts & {"files", "uploads"}:
        return files_transfer
    return None


def supported_pairs() -> list[str]:
    """`source -> destination` for every pair of registered kinds a path joins."""
    return [f"{s} -> {d}" for s, source in SOURCES.kinds.items() for d, destination in DESTINATIONS.kinds.items()
            if path_between(source, destination) is not None]


def data_path_for(connector: ConnectorConfig) -> DataPath:
    """The path for a connector's kinds, or UnsupportedPathError listing the supported pairs."""
    path = path_between(SOURCES.kind(connector.source_type), DESTINATIONS.kind(connector.destination_type))
    if path is None:
        raise UnsupportedPathError(connector.connector_id, connector.source_type, connector.destination_type,
                                   supported_pairs())
    return path
