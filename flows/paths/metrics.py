"""dlt load info -> the run's `metrics` JSON and its Prefect table artifact."""

from __future__ import annotations

import shlex
from typing import Any

from dlt.common.pipeline import ExtractInfo, LoadInfo, NormalizeInfo
from dlt.pipeline.pipeline import Pipeline

from cai_common import ReconciliationError


def inspect_command(pipeline: Pipeline) -> str:
    """The `dlt pipeline` command that shows this pipeline's last run."""
    return f"dlt pipeline --pipelines-dir {shlex.quote(str(pipeline.pipelines_dir))} {pipeline.pipeline_name} info"


def _is_data_table(name: str) -> bool:
    return not name.startswith("_dlt")


def load_metrics(
    pipeline: Pipeline,
    extract_info: ExtractInfo | None,
    normalize_info: NormalizeInfo | None,
    load_info: LoadInfo | None,
) -> dict[str, Any]:
    """Rows per table, load files, bytes and step durations of one extract -> normalize -> load.

    Row counts come from the normalize step of *this* run's load packages, so they never include
    rows from earlier runs that share the pipeline directory.
    """
    durations = {
        name: round((info.finished_at - info.started_at).total_seconds(), 3)
        for name, info in (("extract", extract_info), ("normalize", normalize_info), ("load", load_info))
        if info is not None and info.started_at and info.finished_at
    }
    row_counts: dict[str, int] = {}
    if normalize_info is not None:
        for table, count in normalize_info.row_counts.items():
            if _is_data_table(table):
                row_counts[table] = row_counts.get(table, 0) + int(count)
    files = 0
    size = 0
    failed: list[dict[str, str]] = []
    for package in load_info.load_packages if load_info else []:
        for state, jobs in package.jobs.items():
            for job in jobs:
                table = job.job_file_info.table_name
                if not _is_data_table(table):
                    continue
                if state == "failed_jobs":
                    failed.append({"table": table, "error": str(job.failed_message or "")})
                elif state == "completed_jobs":
                    files += 1
                    size += int(job.file_size)
    return {
        "pipeline_name": pipeline.pipeline_name,
        "pipelines_dir": pipeline.pipelines_dir,
        "inspect": inspect_command(pipeline),
        "destination": pipeline.destination.destination_name if pipeline.destination else None,
        "dataset_name": pipeline.dataset_name,
        "load_ids": list(load_info.loads_ids) if load_info else [],
        "row_counts": row_counts,
        "load_files": files,
        "load_bytes": size,
        "failed_jobs": failed,
        "durations_s": durations,
    }


def reconcile(metrics: dict[str, Any], rows_read: dict[str, int], rows_written: dict[str, int]) -> None:
    """Record rows read from the source and rows PostgreSQL reported writing (`COPY n`), per table and in all.

    Raises:
        ReconciliationError: the totals disagree (the metrics, with both numbers, go with it).
    """
    read, written = sum(rows_read.values()), sum(rows_written.values())
    metrics["reconciliation"] = {"rows_read": read, "rows_written": written, "read_by_table": rows_read,
                                 "written_by_table": rows_written, "agree": read == written}
    if read != written:
        raise ReconciliationError(read, written, metrics)


def not_ready_note(not_ready: list[Any], changed: int = 0) -> str:
    """The summary's words for files left for the next run ("" when there are none)."""
    note = ""
    if not_ready:
        reasons = sorted({n.reason.split(" (", 1)[0] for n in not_ready})
        note += f"; {len(not_ready)} file(s) not ready ({'; '.join(reasons)}), left for the next run"
    if changed:
        note += (f"; {changed} file(s) changed while they were copied (a producer still writing): their copies "
                 "were discarded and their sources kept for the next run")
    return note


def artifact_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per file (loaded or written) or else per table, for a Prefect table artifact."""
    files = metrics.get("files") or []
    if files:
        return [
            {"file": f.get("file_url") or f.get("url"), "table": f.get("table", ""), "rows": f.get("rows"),
             "bytes": f.get("bytes", f.get("size_bytes")), "status": f.get("status", "written")}
            for f in files
        ]
    return [{"table": table, "rows": rows} for table, rows in (metrics.get("row_counts") or {}).items()]
