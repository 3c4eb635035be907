"""Data paths that deliver whole files: query exports and file transfers, to folders, S3 and SFTP."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dlt
import fsspec
import requests
from fsspec import AbstractFileSystem

from cai_common import ConnectorConfigError
from cai_common.transfer import CHUNK
from dlt_destinations.files import FilesystemTarget, TransferTarget, file_destination, transfer_destination
from dlt_destinations.nfs import NfsDestinationConfig
from dlt_destinations.rest_api import RestApiDestinationConfig
from dlt_destinations.rest_api.client import RestTarget
from dlt_destinations.s3 import S3DestinationConfig
from dlt_destinations.sftp import SftpDestinationConfig
from dlt_destinations.sftp.client import open_sftp
from dlt_sources.filesystem import BadFilesError, FilesystemSourceConfig, ReadReport, S3SourceConfig, open_filesystem
from dlt_sources.filesystem.manifests import MANIFESTS, file_manifests
from dlt_sources.sql_database import (
    QueryReport,
    SqlDatabaseSourceConfig,
    csv_file_name,
    ensure_read_only_query,
    query_csv_file,
)
from flows.connector_config import ConnectorConfig
from flows.metrics import load_metrics
from flows.pipelines import PathOutcome, files_ledger, forget_files, pipelines_dir


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


def _transfer_target(connector: ConnectorConfig, verify: Literal["hash", "size"]) -> tuple[str, TransferTarget]:
    """(destination name, target) of a transfer: a filesystem written by transfer_file, or a REST endpoint."""
    if isinstance(connector.destination, RestApiDestinationConfig):
        return "rest_api", RestTarget(connector.destination, requests.Session())
    name, fs, root, options = _file_target(connector)
    return name, FilesystemTarget(fs, root, verify, options.get("part_size") or CHUNK,
                                  getattr(connector.destination, "atomic_rename", True))


def files_transfer(connector: ConnectorConfig) -> PathOutcome:
    """Files of a folder or S3 prefix -> a folder, S3 prefix, SFTP directory or REST endpoint; moved or copied."""
    source = connector.source
    assert isinstance(source, FilesystemSourceConfig | S3SourceConfig)
    if source.mode == "extract":
        problem = f"`extract` loads rows into a `postgres` destination, not `{connector.destination_type}`"
        raise ConnectorConfigError(connector.connector_id, "source", "mode", problem)
    name, target = _transfer_target(connector, source.verify)
    results: list[dict[str, Any]] = []
    report = ReadReport()
    copy_mode = source.transfer == "copy"
    src_fs = open_filesystem(source)
    pipeline = dlt.pipeline(
        pipeline_name=f"connector_{connector.connector_id}",
        pipelines_dir=str(pipelines_dir()),
        destination=transfer_destination(name, src_fs, target, results.append, move=not copy_mode),
        dataset_name="transfers",
    )
    pipeline.sync_destination()
    before = copy.deepcopy(files_ledger(pipeline.state, MANIFESTS) or {})
    resource = file_manifests(source.bucket_url(), source.file_pattern, fs=src_fs, report=report,
                              skip_unchanged=copy_mode and not source.full_refresh)
    extract_info = pipeline.extract(resource)
    normalize_info = pipeline.normalize()
    load_info = pipeline.load(raise_on_failed_jobs=True)
    metrics = load_metrics(pipeline, extract_info, normalize_info, load_info)
    failed = [r for r in results if r["status"] == "failed"]
    if failed and copy_mode:  # a file that did not arrive is retried next run
        forget_files(pipeline, [r["file_url"] for r in failed], before, MANIFESTS)
    metrics.update(files=results, files_unchanged=report.unchanged,
                   bytes_written=sum(r["bytes"] for r in results))
    done = len(results) - len(failed)
    summary = (f"{'copied' if copy_mode else 'moved'} {done} of {len(results)} file(s) "
               f"({metrics['bytes_written']} bytes) to {target.location()}")
    if report.unchanged:
        summary += f"; {report.unchanged} unchanged file(s) already copied"
    if failed:
        raise BadFilesError([_Failure(r["file_url"], r["error"]) for r in failed], summary, metrics)
    return PathOutcome(rows=0, summary=summary, metrics=metrics)


@dataclass(frozen=True)
class _Failure:
    file_url: str
    error: str


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
