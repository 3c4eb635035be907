"""Query exports: a read-only query as one CSV file (formatted by PostgreSQL's COPY) on a file destination."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dlt

from dlt_destinations import DESTINATIONS
from dlt_destinations.files import file_destination
from dlt_sources.sql_database import (
    QueryReport,
    SqlDatabaseSourceConfig,
    csv_file_name,
    ensure_read_only_query,
    query_csv_file,
)
from flows.paths.metrics import load_metrics
from flows.paths.pipelines import PathOutcome, pipeline_name_for, pipelines_dir
from flows.store.connector_config import ConnectorConfig


def query_to_files(connector: ConnectorConfig) -> PathOutcome:
    """A read-only query -> one CSV file (formatted by PostgreSQL's COPY) on the destination's `FileTarget`."""
    source = connector.source
    assert isinstance(source, SqlDatabaseSourceConfig)
    ensure_read_only_query(source.query, connector.connector_id)  # before any connection is made
    file_name = csv_file_name(source, connector.connector_id)
    file_target = DESTINATIONS.kind(connector.destination_type).file_target
    assert file_target is not None  # the path was chosen because the kind accepts files
    target = file_target(connector.destination)
    delivered: list[dict[str, Any]] = []
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name_for(connector),
        pipelines_dir=str(pipelines_dir()),
        destination=file_destination(target, delivered.append),
        dataset_name="exports",
    )
    workdir = Path(pipeline.working_dir) / "exports"
    report = QueryReport()
    try:
        extract_info = pipeline.extract(query_csv_file(source, workdir, file_name, report, connector.connector_id))
        normalize_info = pipeline.normalize()
        load_info = pipeline.load(raise_on_failed_jobs=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metrics = load_metrics(pipeline, extract_info, normalize_info, load_info)
    metrics["query"] = {"reader": report.reader, "rows": report.rows}
    metrics["files"] = delivered
    metrics["bytes_written"] = sum(f["bytes"] for f in delivered)
    urls = ", ".join(f["url"] for f in delivered)
    summary = f"exported {report.rows} rows as CSV ({metrics['bytes_written']} bytes) to {urls}"
    return PathOutcome(rows=report.rows, summary=summary, metrics=metrics)
