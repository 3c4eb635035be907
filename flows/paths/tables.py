"""Data paths into PostgreSQL tables: CSV files (COPY fast path) and read-only queries (Arrow batches)."""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

from dlt.common.pipeline import LoadInfo
from dlt.extract.resource import DltResource
from dlt.pipeline.pipeline import Pipeline

from cai_common import ConnectorConfigError, checks, streams
from cai_common.checks import Check
from cai_common.naming import table_name
from cai_common.pg_types import accepts, comparable, dlt_column
from dlt_destinations.postgres import PostgresDestinationConfig, copied_rows, existing_column_types
from dlt_sources.filesystem import (
    BadFilesError,
    FileReport,
    FileSourceOptions,
    ReadReport,
    ensure_location,
    open_filesystem,
)
from dlt_sources.sql_database import SqlDatabaseSourceConfig
from flows.paths.metrics import load_metrics, not_ready_note, reconcile
from flows.paths.pipelines import (
    PathOutcome,
    adopt_legacy_ledger,
    files_ledger,
    forget_files,
    legacy_name,
    pipeline_name_for,
    postgres_pipeline,
)
from flows.store.connector_config import ConnectorConfig


def query_to_table(connector: ConnectorConfig) -> PathOutcome:
    """A read-only query -> a PostgreSQL table (`table_name`, default: the connector's name), types kept exactly.

    PostgreSQL describes the query's columns (type OIDs and modifiers), writes its rows as CSV text,
    and the destination's COPY reads them into columns of the same types.
    """
    # Loaded here, not with the module: CSV loads never need psycopg 3 or the query readers.
    from dlt_sources.sql_database import (
        QueryError,
        QueryReport,
        describe_query,
        ensure_read_only_query,
        query_table_rows,
    )

    source = connector.source
    target = connector.destination
    assert isinstance(source, SqlDatabaseSourceConfig)
    assert isinstance(target, PostgresDestinationConfig)
    ensure_read_only_query(source.query, connector.connector_id)  # before any connection is made
    table = table_name(target.table_name or connector.connector_name)
    columns = describe_query(source, connector.connector_id)
    _check_existing_table(connector.connector_id, target, table, {c.name: c.pg_type for c in columns})
    pipeline = postgres_pipeline(pipeline_name_for(connector), target)
    report = QueryReport(reader="copy", as_text=[f"{c.name} ({c.source_type})" for c in columns if not c.exact])
    workdir = Path(pipeline.working_dir) / "query_rows"
    resource = query_table_rows(source, workdir, table, columns, report, connector.connector_id)
    resource.apply_hints(write_disposition=target.write_disposition, primary_key=target.primary_key)
    if pipeline.has_pending_data:  # a dead run's package stands for a stream that died with it
        pipeline.drop_pending_packages()
    try:
        metrics, _ = _run(pipeline, resource, workdir, raise_on_failed_jobs=True)
    finally:
        for path in report.stream_files:
            streams.forget(path)
    if report.stream_files and not report.streams_opened:  # the load read the placeholder, not the rows
        raise QueryError(connector.connector_id, "the query's rows never reached the table: the load read its "
                         "placeholder file instead of the stream (a load package copied rather than linked?)")
    metrics["query"] = {"reader": report.reader, "rows": report.rows, "columns_as_text": report.as_text}
    metrics["row_counts"] = {table: report.rows}
    reconcile(metrics, {table: report.rows}, copied_rows(metrics["load_ids"]))
    summary = (f"copied {report.rows} rows into `{target.schema_name}`.`{table}` ({target.write_disposition}), "
               f"{len(columns)} column(s) with the source's types")
    if report.as_text:
        summary += "; landed as text (no exact type in the destination): " + ", ".join(report.as_text)
    return PathOutcome(rows=report.rows, summary=summary, metrics=metrics)


def _run(
    pipeline: Pipeline, resource: DltResource, workdir: Path, *, raise_on_failed_jobs: bool
) -> tuple[dict[str, Any], LoadInfo]:
    """Extract, normalize and load one resource; its local files in ``workdir`` go either way."""
    try:
        extract_info = pipeline.extract(resource)
        normalize_info = pipeline.normalize()
        load_info = pipeline.load(raise_on_failed_jobs=raise_on_failed_jobs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return load_metrics(pipeline, extract_info, normalize_info, load_info), load_info


def _load_pending(pipeline: Pipeline, source: FileSourceOptions | None = None) -> None:
    """Finish a load an earlier run left pending: its rows were extracted already and go first.

    A CSV file whose typing pass ran beside its load (`cai_common.checks`) had its table created from
    its first rows; the pass died with that run, so it runs again (with ``source``'s dialect) and the
    COPY waits for its verdict as it would have.
    """
    if not pipeline.has_pending_data:
        return
    pipeline.normalize()
    again: list[Check] = []
    if source is not None:
        from dlt_sources.filesystem import TYPED_BESIDE_LOAD, pass_again, pinned_types

        for load_id in pipeline.list_normalized_load_packages():
            state: dict[str, Any] = dict(pipeline.get_load_package_state(load_id))
            waiting = state.get(TYPED_BESIDE_LOAD) or {}
            jobs = pipeline.get_load_package_info(load_id).jobs
            for job in [*jobs.get("new_jobs", []), *jobs.get("started_jobs", [])]:
                found = waiting.get(str(os.stat(job.file_path).st_ino))
                if found:
                    check = Check(verdict=pass_again(Path(job.file_path), found["file_url"], source,
                                                     pinned_types(source.columns)),
                                  new_columns=frozenset(found["new_columns"]))
                    checks.register(job.file_path, check)
                    again.append(check)
    try:
        info = pipeline.load(raise_on_failed_jobs=True)
    finally:
        for check in again:
            checks.forget_check(check)
    copied_rows(list(info.loads_ids))  # counted by that load, not this run


def _check_existing_table(
    connector_id: int, target: PostgresDestinationConfig, table: str, types: dict[str, str]
) -> None:
    """Refuse to load into an existing table whose column types would change the query's values."""
    existing = existing_column_types(target.dsn(), target.schema_name).get(table, {})
    for name, pg_type in types.items():
        if name in existing and not accepts(comparable(existing[name]), comparable(pg_type)):
            raise ConnectorConfigError(connector_id, "destination", "table_name", (
                f"`{target.schema_name}`.`{table}` already has column `{name}` as {existing[name]}, but the query "
                f"returns {pg_type}: loading would change its values; drop or alter that table, or load into "
                f"another `table_name`"))


def files_to_table(connector: ConnectorConfig) -> PathOutcome:
    """CSV files of a file source -> tables in a PostgreSQL schema (one table per file stem)."""
    source = connector.source
    target = connector.destination
    assert isinstance(source, FileSourceOptions)
    assert isinstance(target, PostgresDestinationConfig)
    if source.mode == "transfer":
        raise ConnectorConfigError(connector.connector_id, "source", "mode",
                                   "`transfer` copies files, and a `postgres` destination takes rows: use `extract`")
    return load_csv_files(pipeline_name_for(connector), source, target, legacy=legacy_name(connector),
                          connector_id=connector.connector_id)


def load_csv_files(
    pipeline_name: str,
    source: FileSourceOptions,
    target: PostgresDestinationConfig,
    progress: Callable[[int], None] | None = None,
    legacy: str | None = None,
    connector_id: int | None = None,
) -> PathOutcome:
    """Load the new or changed CSV files of a source into PostgreSQL with one dlt pipeline.

    ``legacy`` names the pipeline an earlier version used for the same files and target: its
    loaded-files ledger is adopted on the first run, so upgrading loads nothing twice.

    A file whose COPY fails (a value PostgreSQL rejects) is taken out of the loaded-files ledger again
    so the next run retries it; with ``on_bad_file: fail`` the run then fails listing the files.
    """
    fs = open_filesystem(source)
    ensure_location(source, fs, connector_id)
    # The CSV readers (pyarrow) load only on a path that reads CSV: a query -> table run never pays for them.
    from dlt_sources.filesystem import csv_tables
    from dlt_sources.filesystem.staging import supports_fast_path

    if supports_fast_path(source):  # COPY reads the source files as they are
        delimiter, encoding = source.delimiter, "utf-8" if source.encoding == "utf-8-sig" else source.encoding
    else:  # they are transcoded to psql's CSV first
        delimiter, encoding = ",", "utf-8"
    pipeline = postgres_pipeline(pipeline_name, target, delimiter=delimiter, encoding=encoding)
    if legacy:
        adopt_legacy_ledger(pipeline, legacy)
    _load_pending(pipeline, source)
    before = copy.deepcopy(files_ledger(pipeline.state) or {})
    stage_dir = Path(pipeline.working_dir) / "staged_csv"
    shutil.rmtree(stage_dir, ignore_errors=True)
    report = ReadReport()
    disposition = "replace" if source.full_refresh else target.write_disposition
    resource = csv_tables(
        source.bucket_url(),
        source.file_pattern,
        fs=fs,
        options=source,
        report=report,
        table_name=target.table_name,
        stage_dir=stage_dir,
        full_refresh=source.full_refresh,
        on_bad_file=source.on_bad_file,
        progress=progress,
        columns=source.columns,
        destination_types=existing_column_types(target.dsn(), target.schema_name),
        # A merge COPYs into dlt's staging table and merges after: there the types are settled first.
        type_beside_load=disposition != "merge",
        readiness=source.readiness(),
        refuse_changed=disposition == "append",
    )
    resource.apply_hints(write_disposition=disposition, primary_key=target.primary_key)
    try:
        metrics, load_info = _run(pipeline, resource, stage_dir, raise_on_failed_jobs=False)
    finally:
        settled = _settle_checks(report)
    _record_widened(pipeline, settled)
    failed = _failed_files(load_info, report)
    if failed:
        forget_files(pipeline, [entry.file_url for entry in failed], before)
        for entry, error in failed.items():
            entry.status = "skipped" if source.on_bad_file == "skip" else "failed"
            entry.error, entry.rows = _copy_error(error), 0
    metrics["files"] = [f.as_dict() for f in report.files]
    metrics["files_unchanged"] = report.unchanged
    metrics["files_not_ready"] = len(report.not_ready)
    metrics["not_ready"] = [n.as_dict() for n in report.not_ready]
    # Imported files skip dlt's normalize step, whose counts would read 0: count from the files.
    metrics["row_counts"] = report.rows_by_table()
    reconcile(metrics, report.rows_by_table(), copied_rows(metrics["load_ids"]))
    bad = [f for f in report.files if f.status != "loaded"]
    if bad and source.on_bad_file == "fail":
        raise BadFilesError(bad, metrics=metrics)
    return PathOutcome(rows=report.rows, summary=_summary(source, target, report, disposition), metrics=metrics)


def _settle_checks(report: ReadReport) -> dict[str, dict[str, str]]:
    """Wait for every typing pass of the run, count each file's records from its verdict, and forget
    the checks. Returns table -> column -> type of the columns a load gave the verdict's types."""
    widened: dict[str, dict[str, str]] = {}
    for entry in report.files:
        check = entry.check
        if check is None:
            continue
        entry.check = None
        checks.forget_check(check)
        if not check.verdict.cancel():
            wait([check.verdict])
        if check.verdict.cancelled() or check.verdict.exception() is not None:
            continue
        entry.rows = check.verdict.result().rows
        if check.altered:
            widened.setdefault(entry.table, {}).update(check.altered)
    return widened


def _record_widened(pipeline: Pipeline, widened: dict[str, dict[str, str]]) -> None:
    """Give the pipeline's schema the types its load gave new columns after their verdict, as the table has."""
    if not widened:
        return
    schema = pipeline.default_schema
    for table, columns in widened.items():
        name = schema.naming.normalize_table_identifier(table)
        for column, pg_type in columns.items():
            schema.tables[name]["columns"][column].update(dlt_column(column, pg_type))  # type: ignore[typeddict-item]
    schema._bump_version()
    pipeline.schemas.save_schema(schema)


def _failed_files(load_info: LoadInfo, report: ReadReport) -> dict[FileReport, str]:
    """Source files whose COPY failed, with the error. dlt imports each staged file by hard link, so a
    failed job's file is the staged file (same inode); a job that cannot be matched fails its table's files."""
    by_inode = {f.inode: f for f in report.files if f.inode is not None}
    failed: dict[FileReport, str] = {}
    for package in load_info.load_packages:
        for job in package.jobs.get("failed_jobs", []):
            try:
                entry = by_inode.get(os.stat(job.file_path).st_ino)
            except OSError:
                entry = None
            entries = [entry] if entry else report.files_of({job.job_file_info.table_name})
            for each in entries:
                failed[each] = str(job.failed_message or "")
    return failed


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
    # PostgreSQL's hints are about its settings ("a different datestyle"), not the file: the value is wrong.
    message = re.sub(r" HINT: .*?(?= at line \d+|$)", "", message)
    return message[:500]


def _summary(
    source: FileSourceOptions, target: PostgresDestinationConfig, report: ReadReport,
    disposition: str,
) -> str:
    loaded = [f for f in report.files if f.status == "loaded"]
    skipped = [f for f in report.files if f.status == "skipped"]
    if not report.files:
        where = f"`{source.file_pattern}` under `{source.bucket_url()}`"
        if report.not_ready:
            return f"nothing loaded from {where}" + not_ready_note(report.not_ready)
        if report.unchanged:
            return f"no new or changed files: {report.unchanged} file(s) matching {where} already loaded"
        return f"no files matched {where}; nothing loaded"
    text = (f"loaded {report.rows} rows from {len(loaded)} file(s) into `{target.schema_name}` ({disposition}): "
            + ", ".join(f"{t} ({n})" for t, n in sorted(report.rows_by_table().items())))
    if report.unchanged:
        text += f"; {report.unchanged} unchanged file(s) not read again"
    if skipped:
        text += "; skipped: " + "; ".join(f"`{f.file_url}`: {f.error}" for f in skipped)
    return text + not_ready_note(report.not_ready)
