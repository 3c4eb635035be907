"""File transfers: files of a file source moved or copied, verified, to a file or upload destination.

Imports nothing of the CSV readers or the query source (pyarrow, connectorx): a transfer process
holds only what moves bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dlt

from cai_common import ConnectorConfigError
from dlt_destinations import DESTINATIONS
from dlt_destinations.files import FilesystemTarget, TransferTarget, transfer_destination
from dlt_sources.filesystem import BadFilesError, FileSourceOptions, ReadReport, ensure_location, open_filesystem
from dlt_sources.filesystem.manifests import MANIFESTS, file_manifests
from flows.paths.metrics import load_metrics, not_ready_note
from flows.paths.pipelines import (
    PathOutcome,
    adopt_legacy_ledger,
    files_ledger,
    legacy_name,
    pipeline_name_for,
    pipelines_dir,
)
from flows.store.connector_config import ConnectorConfig
from flows.store.delivered import DeliveredFiles


def _transfer_target(connector: ConnectorConfig, verify: Literal["hash", "size"]) -> tuple[str, TransferTarget]:
    """(destination name, target) of a transfer: the kind's file target, else its upload target."""
    kind = DESTINATIONS.kind(connector.destination_type)
    if kind.file_target is not None:
        target = kind.file_target(connector.destination)
        return target.name, FilesystemTarget(target, verify)
    assert kind.upload_target is not None  # the path was chosen because the kind accepts uploads
    return kind.code, kind.upload_target(connector.destination)


def files_transfer(connector: ConnectorConfig) -> PathOutcome:
    """Files of a file source -> a file or upload destination; moved or copied."""
    source = connector.source
    assert isinstance(source, FileSourceOptions)
    if source.mode == "extract":
        problem = f"`extract` loads rows into a `postgres` destination, not `{connector.destination_type}`"
        raise ConnectorConfigError(connector.connector_id, "source", "mode", problem)
    name, target = _transfer_target(connector, source.verify)
    results: list[dict[str, Any]] = []
    report = ReadReport()
    copy_mode = source.transfer == "copy"
    src_fs = open_filesystem(source)
    ensure_location(source, src_fs, connector.connector_id)
    delivered = DeliveredFiles(pipeline_name_for(connector), connector.connector_id)

    def on_result(result: dict[str, Any]) -> None:
        if copy_mode and result["status"] == "copied":  # only what arrived, verified, is never sent again
            delivered.record(result["file_url"], report.stamps[result["file_url"]], result["url"], result.get("sha256"))
        results.append(result)

    pipeline = dlt.pipeline(
        pipeline_name=delivered.pipeline_name,
        pipelines_dir=str(pipelines_dir()),
        destination=transfer_destination(name, src_fs, target, on_result, move=not copy_mode),
        dataset_name="transfers",
    )
    pipeline.sync_destination()
    if pipeline.has_pending_data:
        # A run that died left manifests of files it may have sent already: listing the source again
        # is the truth (a moved file is gone from it, the rest is sent now), so its package is dropped.
        pipeline.drop_pending_packages()
    versions: dict[str, Any] | None = None
    if copy_mode:
        versions = delivered.versions()
        if not versions:  # a ledger an earlier version kept on this worker's disk moves to the store
            versions = _ledger_on_disk(pipeline, connector, name)
            delivered.record_many(versions)
    if source.full_refresh:
        versions = None

    resource = file_manifests(source.bucket_url(), source.file_pattern, fs=src_fs, report=report,
                              delivered=versions, readiness=source.readiness())
    try:
        extract_info = pipeline.extract(resource)
        normalize_info = pipeline.normalize()
        load_info = pipeline.load(raise_on_failed_jobs=True)
    finally:
        delivered.close()
    metrics = load_metrics(pipeline, extract_info, normalize_info, load_info)
    failed = [r for r in results if r["status"] == "failed"]
    changed = [r for r in results if r["status"] == "changed"]
    metrics.update(files=results, files_unchanged=report.unchanged,
                   bytes_written=sum(r["bytes"] for r in results if r["status"] in ("copied", "moved")),
                   files_not_ready=len(report.not_ready) + len(changed),
                   not_ready=[n.as_dict() for n in report.not_ready])
    done = len(results) - len(failed) - len(changed)
    summary = (f"{'copied' if copy_mode else 'moved'} {done} of {len(results) - len(changed)} file(s) "
               f"({metrics['bytes_written']} bytes) to {target.location()}")
    if report.unchanged:
        summary += f"; {report.unchanged} unchanged file(s) already copied"
    summary += not_ready_note(report.not_ready, len(changed))
    if failed:
        raise BadFilesError([_Failure(r["file_url"], r["error"]) for r in failed], summary, metrics)
    return PathOutcome(rows=0, summary=summary, metrics=metrics)


@dataclass(frozen=True)
class _Failure:
    file_url: str
    error: str


def _ledger_on_disk(pipeline: Any, connector: ConnectorConfig, destination_name: str) -> dict[str, Any]:
    """The delivered-files ledger earlier versions kept in dlt's local state (this pipeline's, or the
    `connector_<id>` pipeline's for the same kind of destination), to move into the config store."""
    adopt_legacy_ledger(pipeline, legacy_name(connector), MANIFESTS, legacy_destination=destination_name)
    return dict(files_ledger(pipeline.state, MANIFESTS) or {})
