"""Data paths: which dlt resource feeds which dlt destination, keyed by (source type, destination type).

Each path builds a source and a destination from the connector's typed config and runs one dlt
pipeline named `connector_<id>`; nothing here reads or writes data itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.pipeline.pipeline import Pipeline

from cai_common import UnsupportedPathError
from dlt_destinations.postgres import PostgresDestinationConfig, postgres
from dlt_sources.filesystem import (
    FilesystemSourceConfig,
    ReadReport,
    S3SourceConfig,
    csv_tables,
    open_filesystem,
)
from flows.connector_config import ConnectorConfig
from flows.embedded import data_dir
from flows.metrics import load_metrics


@dataclass
class PathOutcome:
    """What one data path did: rows, a one-paragraph summary and the metrics for the run record."""

    rows: int
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)


def pipelines_dir() -> Path:
    """Where dlt keeps pipeline state and traces: `CAI_PIPELINES_DIR` or `<cai data dir>/pipelines`."""
    return Path(os.environ.get("CAI_PIPELINES_DIR") or data_dir() / "pipelines")


def connector_pipeline(connector: ConnectorConfig, destination: Any, dataset_name: str) -> Pipeline:
    """The dlt pipeline of one connector; `dlt pipeline --pipelines-dir DIR connector_<id> info` reads it."""
    return dlt.pipeline(
        pipeline_name=f"connector_{connector.connector_id}",
        pipelines_dir=str(pipelines_dir()),
        destination=destination,
        dataset_name=dataset_name,
    )


def files_to_postgres(connector: ConnectorConfig) -> PathOutcome:
    """CSV files in a folder or S3 prefix -> tables in a PostgreSQL schema (one table per file stem)."""
    source = connector.source
    target = connector.destination
    assert isinstance(source, FilesystemSourceConfig | S3SourceConfig)
    assert isinstance(target, PostgresDestinationConfig)
    report = ReadReport()
    resource = csv_tables(
        source.bucket_url(),
        source.file_pattern,
        fs=open_filesystem(source),
        options=source,
        report=report,
        table_name=target.table_name,
    )
    resource.apply_hints(write_disposition=target.write_disposition, primary_key=target.primary_key)
    pipeline = connector_pipeline(connector, postgres(target), target.schema_name)
    load_info = pipeline.run(resource)
    metrics = load_metrics(pipeline, load_info)
    metrics["files"] = [f.as_dict() for f in report.files]
    if not report.files:
        summary = f"no files matched `{source.file_pattern}` under `{source.bucket_url()}`; nothing loaded"
    else:
        tables = ", ".join(f"{t} ({n})" for t, n in sorted(metrics["row_counts"].items()))
        summary = (
            f"loaded {report.rows} rows from {len(report.files)} file(s) into "
            f"`{target.schema_name}` ({target.write_disposition}): {tables}"
        )
    return PathOutcome(rows=report.rows, summary=summary, metrics=metrics)


DATA_PATHS: dict[tuple[str, str], Callable[[ConnectorConfig], PathOutcome]] = {
    ("filesystem", "postgres"): files_to_postgres,
    ("s3", "postgres"): files_to_postgres,
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
