"""Data paths: which dlt resource feeds which dlt destination, keyed by (source type, destination type).

Each path builds a source and a destination from the connector's typed config and runs one dlt
pipeline named `connector_<id>`; nothing here reads or writes data itself.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import fsspec
from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCaseNaming
from dlt.pipeline.pipeline import Pipeline
from fsspec import AbstractFileSystem

from cai_common import UnsupportedPathError
from dlt_destinations.files import file_destination
from dlt_destinations.nfs import NfsDestinationConfig
from dlt_destinations.postgres import PostgresDestinationConfig, postgres
from dlt_destinations.s3 import S3DestinationConfig
from dlt_destinations.sftp import SftpDestinationConfig
from dlt_destinations.sftp.client import open_sftp
from dlt_sources.filesystem import (
    LEDGER_KEY,
    RESOURCE_NAME,
    BadFilesError,
    FileReport,
    FilesystemSourceConfig,
    ReadReport,
    S3SourceConfig,
    csv_tables,
    open_filesystem,
)
from dlt_sources.filesystem.staging import Progress
from dlt_sources.sql_database import (
    QueryReport,
    SqlDatabaseSourceConfig,
    csv_file_name,
    ensure_read_only_query,
    query_csv_file,
    query_rows,
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


def postgres_pipeline(
    pipeline_name: str, target: PostgresDestinationConfig, *, delimiter: str = ",", encoding: str = "utf-8"
) -> Pipeline:
    """A dlt pipeline into the target schema, its state synced from the destination first.

    Syncing means a worker that never ran this connector starts from the state the last run left
    in the destination (e.g. the loaded-files ledger), not from nothing.
    """
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        pipelines_dir=str(pipelines_dir()),
        destination=postgres(target, delimiter=delimiter, encoding=encoding),
        dataset_name=target.schema_name,
    )
    pipeline.sync_destination()
    return pipeline


def query_to_postgres(connector: ConnectorConfig) -> PathOutcome:
    """A read-only query -> a PostgreSQL table (`table_name`, default: the connector's name), as Arrow batches."""
    source = connector.source
    target = connector.destination
    assert isinstance(source, SqlDatabaseSourceConfig)
    assert isinstance(target, PostgresDestinationConfig)
    ensure_read_only_query(source.query, connector.connector_id)  # before any connection is made
    table = SnakeCaseNaming().normalize_table_identifier(target.table_name or connector.connector_name)
    pipeline = postgres_pipeline(f"connector_{connector.connector_id}", target)
    report = QueryReport()
    resource = query_rows(source, table, report, connector.connector_id)
    resource.apply_hints(write_disposition=target.write_disposition, primary_key=target.primary_key)
    if pipeline.has_pending_data:  # a load interrupted earlier goes first: its rows were extracted already
        pipeline.normalize()
        pipeline.load(raise_on_failed_jobs=True)
    extract_info = pipeline.extract(resource)
    normalize_info = pipeline.normalize()
    load_info = pipeline.load(raise_on_failed_jobs=True)
    metrics = load_metrics(pipeline, extract_info, normalize_info, load_info)
    metrics["query"] = {"reader": report.reader, "batches": report.batches, "rows": report.rows,
                        "fallback_reason": report.fallback_reason}
    summary = (f"exported {report.rows} rows ({report.reader}, {report.batches} batch(es)) into "
               f"`{target.schema_name}`.`{table}` ({target.write_disposition})")
    return PathOutcome(rows=report.rows, summary=summary, metrics=metrics)


def _file_target(connector: ConnectorConfig) -> tuple[str, AbstractFileSystem, str, dict[str, Any]]:
    """(destination name, fsspec filesystem, root path, put options) of a file destination."""
    target = connector.destination
    if isinstance(target, NfsDestinationConfig):
        # The export is our own temp file: link it into place when the folder is on the same disk.
        return "nfs", fsspec.filesystem("file"), target.path.rstrip("/"), {"allow_link": True}
    if isinstance(target, SftpDestinationConfig):
        return "sftp", open_sftp(target), target.path.rstrip("/") or "/", {}
    assert isinstance(target, S3DestinationConfig)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **target.storage_options())
    root = f"{target.bucket}/{target.prefix.strip('/')}".rstrip("/")
    # The spec's rule (6.2): multipart above 25 MB, in parts of `chunk_size_mb`.
    return "s3", fs, root, {"part_size": target.chunk_size_mb * 1024 * 1024, "multipart_above": 25 * 1024 * 1024}


def query_to_files(connector: ConnectorConfig) -> PathOutcome:
    """A read-only query -> one CSV file (formatted by PostgreSQL's COPY) in a folder, S3 prefix or SFTP directory."""
    source = connector.source
    assert isinstance(source, SqlDatabaseSourceConfig)
    ensure_read_only_query(source.query, connector.connector_id)  # before any connection is made
    file_name = csv_file_name(source, connector.connector_id)
    name, fs, root, put_kwargs = _file_target(connector)
    delivered: list[dict[str, Any]] = []
    pipeline = dlt.pipeline(
        pipeline_name=f"connector_{connector.connector_id}",
        pipelines_dir=str(pipelines_dir()),
        destination=file_destination(name, fs, root, delivered.append, **put_kwargs),
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


def files_to_postgres(connector: ConnectorConfig) -> PathOutcome:
    """CSV files in a folder or S3 prefix -> tables in a PostgreSQL schema (one table per file stem)."""
    source = connector.source
    target = connector.destination
    assert isinstance(source, FilesystemSourceConfig | S3SourceConfig)
    assert isinstance(target, PostgresDestinationConfig)
    return load_csv_files(f"connector_{connector.connector_id}", source, target)


def _ledger(state: Any) -> dict[str, Any] | None:
    """The loaded-files ledger inside a pipeline state, wherever dlt keeps the resource's state."""
    for source_state in (state.get("sources") or {}).values():
        resource_state = (source_state.get("resources") or {}).get(RESOURCE_NAME)
        if resource_state is not None:
            return resource_state.setdefault(LEDGER_KEY, {})
    return None


def load_csv_files(
    pipeline_name: str,
    source: FilesystemSourceConfig | S3SourceConfig,
    target: PostgresDestinationConfig,
    progress: Progress | None = None,
) -> PathOutcome:
    """Load the new or changed CSV files of a source into PostgreSQL with one dlt pipeline.

    A file whose COPY fails (a value PostgreSQL rejects) is taken out of the loaded-files ledger again
    so the next run retries it; with ``on_bad_file: fail`` the run then fails listing the files.
    """
    encoding = "utf-8" if source.encoding == "utf-8-sig" else source.encoding
    pipeline = postgres_pipeline(pipeline_name, target, delimiter=source.delimiter, encoding=encoding)
    before = copy.deepcopy(_ledger(pipeline.state) or {})
    if pipeline.has_pending_data:  # a load interrupted earlier goes first: its rows were extracted already
        pipeline.normalize()
        pipeline.load(raise_on_failed_jobs=True)
    stage_dir = Path(pipeline.working_dir) / "staged_csv"
    shutil.rmtree(stage_dir, ignore_errors=True)
    report = ReadReport()
    resource = csv_tables(
        source.bucket_url(),
        source.file_pattern,
        fs=open_filesystem(source),
        options=source,
        report=report,
        table_name=target.table_name,
        stage_dir=stage_dir,
        full_refresh=source.full_refresh,
        on_bad_file=source.on_bad_file,
        progress=progress,
    )
    disposition = "replace" if source.full_refresh else target.write_disposition
    resource.apply_hints(write_disposition=disposition, primary_key=target.primary_key)
    try:
        extract_info = pipeline.extract(resource)
        normalize_info = pipeline.normalize()
        load_info = pipeline.load(raise_on_failed_jobs=False)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    metrics = load_metrics(pipeline, extract_info, normalize_info, load_info)
    failed_tables = {job["table"]: job["error"] for job in metrics["failed_jobs"]}
    if failed_tables:
        _unledger(pipeline, report.files_of(set(failed_tables)), before)
        for entry in report.files_of(set(failed_tables)):
            entry.status = "skipped" if source.on_bad_file == "skip" else "failed"
            entry.error, entry.rows = _copy_error(failed_tables[entry.table]), 0
    metrics["files"] = [f.as_dict() for f in report.files]
    metrics["files_unchanged"] = report.unchanged
    # Imported files skip dlt's normalize step, whose counts would read 0: count from the files.
    metrics["row_counts"] = report.rows_by_table()
    bad = [f for f in report.files if f.status != "loaded"]
    if bad and source.on_bad_file == "fail":
        raise BadFilesError(bad)
    return PathOutcome(rows=report.rows, summary=_summary(source, target, report, disposition), metrics=metrics)


def _unledger(pipeline: Pipeline, files: list[FileReport], before: dict[str, Any]) -> None:
    """Put these files' ledger entries back as they were before the run, so the next run retries them."""
    with pipeline.managed_state(extract_state=True) as state:
        ledger = _ledger(state)
        if ledger is None:
            return
        for entry in files:
            if entry.file_url in before:
                ledger[entry.file_url] = before[entry.file_url]
            else:
                ledger.pop(entry.file_url, None)


def _copy_error(message: str) -> str:
    """PostgreSQL's own words from a failed COPY job, with its line number made the file's.

    dlt reads the header line itself and streams the rest to COPY, so COPY's line N is line N + 1
    of the file.
    """
    marker = "DestinationTerminalException: "
    if marker in message:
        message = message.rsplit(marker, 1)[1]
    message = " ".join(message.split())
    message = re.sub(r"CONTEXT: COPY [^,]+, line (\d+)", lambda m: f"at line {int(m[1]) + 1}", message)
    return message[:500]


def _summary(
    source: FilesystemSourceConfig | S3SourceConfig, target: PostgresDestinationConfig, report: ReadReport,
    disposition: str,
) -> str:
    loaded = [f for f in report.files if f.status == "loaded"]
    skipped = [f for f in report.files if f.status == "skipped"]
    if not report.files:
        where = f"`{source.file_pattern}` under `{source.bucket_url()}`"
        if report.unchanged:
            return f"no new or changed files: {report.unchanged} file(s) matching {where} already loaded"
        return f"no files matched {where}; nothing loaded"
    text = (f"loaded {report.rows} rows from {len(loaded)} file(s) into `{target.schema_name}` ({disposition}): "
            + ", ".join(f"{t} ({n})" for t, n in sorted(report.rows_by_table().items())))
    if report.unchanged:
        text += f"; {report.unchanged} unchanged file(s) not read again"
    if skipped:
        text += "; skipped: " + "; ".join(f"`{f.file_url}`: {f.error}" for f in skipped)
    return text


DATA_PATHS: dict[tuple[str, str], Callable[[ConnectorConfig], PathOutcome]] = {
    ("filesystem", "postgres"): files_to_postgres,
    ("s3", "postgres"): files_to_postgres,
    ("sql_database", "postgres"): query_to_postgres,
    ("sql_database", "nfs"): query_to_files,
    ("sql_database", "s3"): query_to_files,
    ("sql_database", "sftp"): query_to_files,
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
