"""The CSV files resource: lists files with dlt's filesystem resource and loads the new or changed ones.

Which files were loaded is kept in dlt's resource state (file URL -> modification date and size), so
a re-run reads only new or changed files and the state travels with the load package to the
destination. Each file is streamed into the load package for COPY (see `staging`): as it is when
PostgreSQL can read its dialect, transcoded to psql's CSV otherwise. Without a staging folder (tests
and tools reading files) files come as Arrow batches instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import dlt
from dlt.common.schema.utils import new_table
from dlt.common.storages.fsspec_filesystem import FileItemDict
from dlt.extract.resource import DltResource
from dlt.sources.filesystem import filesystem
from fsspec import AbstractFileSystem

from cai_common import checks
from cai_common.checks import Check
from cai_common.file_versions import Fingerprint, SourceChanged, guard
from cai_common.pg_types import accepts, column_pg_type, comparable, dlt_column
from dlt_sources.filesystem.configuration import CsvOptions
from dlt_sources.filesystem.readers import TableTypes, read_csv_batches, table_name_for
from dlt_sources.filesystem.readiness import NotReady, Readiness, ReadyFiles
from dlt_sources.filesystem.reports import (
    LEDGER_KEY,
    RESOURCE_NAME,
    TYPED_BESIDE_LOAD,
    CsvFileError,
    FileReport,
    ReadReport,
    changed_since_loaded,
    stamp,
)
from dlt_sources.filesystem.staging import Progress, pinned_types, stage_csv, supports_fast_path


def csv_tables(
    bucket_url: str,
    file_glob: str,
    *,
    fs: AbstractFileSystem,
    options: CsvOptions,
    report: ReadReport,
    table_name: str | None = None,
    stage_dir: Path | None = None,
    full_refresh: bool = False,
    on_bad_file: Literal["fail", "skip"] = "fail",
    progress: Progress | None = None,
    columns: dict[str, str] | None = None,
    destination_types: dict[str, dict[str, str]] | None = None,
    type_beside_load: bool = False,
    readiness: Readiness | None = None,
    refuse_changed: bool = False,
) -> DltResource:
    """A dlt resource loading every new or changed CSV file, one table per file stem.

    Args:
        bucket_url: folder or prefix URL (``file:///data``, ``s3://bucket/prefix``).
        file_glob: glob relative to ``bucket_url``; ``**`` recurses.
        fs: the fsspec filesystem to list and read with (carries the credentials).
        options: CSV parsing options.
        report: filled with one FileReport per file as the resource is consumed.
        table_name: load every file into this table instead of one per stem.
        stage_dir: where files are staged for the COPY fast path (same filesystem as the pipeline,
            so dlt can hard-link them); None reads every file as Arrow batches.
        full_refresh: ignore the ledger and read every matching file.
        on_bad_file: ``fail`` stops the run at a malformed file; ``skip`` lists it and goes on.
        progress: called with source bytes read, for progress bars.
        columns: column -> PostgreSQL type pinned by the user instead of inferred.
        destination_types: table -> column -> type of the tables already in the destination schema.
        type_beside_load: create tables from each file's first rows and let the pass over every value
            run beside its COPY (`staging`, `cai_common.checks`); the destination's load job must wait
            for the verdict, as the postgres destination's does.
        readiness: take only files that are ready (settled, or with their marker); the others are left for
            the next run in ``report.not_ready``. None takes every file as listed.
        refuse_changed: a file loaded before that has changed since fails (or is skipped) instead of
            loading again: with ``append`` its first rows would land twice.
    """
    listing = filesystem(bucket_url=bucket_url, credentials=fs, file_glob=file_glob)
    types = TableTypes()
    fast = stage_dir is not None
    pinned = pinned_types(columns)
    file_url_of = [""]  # the file being read, for errors raised while declaring its columns

    ready = ReadyFiles(fs, readiness or Readiness(0.0), not_ready=report.not_ready)

    def staged(file: FileItemDict, table: str, entry: FileReport, taken: Fingerprint) -> Iterator[Any]:
        assert stage_dir is not None
        csv_file = stage_csv(file, options, stage_dir, progress, pinned, later=type_beside_load)
        try:
            guard(fs, file["file_url"], taken)()  # read whole, or linked: still the version found ready
        except SourceChanged:
            if csv_file.verdict is not None:
                csv_file.verdict.cancel()
            csv_file.path.unlink(missing_ok=True)
            raise
        entry.path = "copy" if supports_fast_path(options) else "transcoded"
        schema = dlt.current.source_schema()
        table = schema.naming.normalize_table_identifier(table)
        existing = schema.get_table_columns(table) if table in schema.tables else {}
        try:
            # A column without a value in the first rows is checked against the table once its verdict is in.
            new_columns = table_columns(table, csv_file.types, existing, unchecked=csv_file.unseen)
        except CsvFileError:
            csv_file.path.unlink(missing_ok=True)
            raise
        if new_columns:
            # Declared on the live schema, table by table: hints passed with the imported file would
            # merge into the resource and so into every other file's table.
            schema.update_table(new_table(table, columns=new_columns))  # type: ignore[arg-type]
        entry.rows = csv_file.rows
        entry.inode = csv_file.path.stat().st_ino
        if csv_file.verdict is not None:
            created = frozenset(c["name"] for c in new_columns if c["name"] not in pinned and c["name"] not in existing
                                and c["name"] not in (destination_types or {}).get(table, {}))
            entry.check = Check(verdict=csv_file.verdict, new_columns=created)
            checks.register(csv_file.path, entry.check)
            # The load package keeps what a pass needs to run again, should this process die before its load.
            state: dict[str, Any] = dlt.current.load_package_state()["state"]  # type: ignore[assignment]
            waiting = state.setdefault(TYPED_BESIDE_LOAD, {})
            waiting[str(entry.inode)] = {"file_url": file["file_url"], "new_columns": sorted(created)}
        yield dlt.mark.with_file_import(
            str(csv_file.path), "csv", csv_file.rows, hints=dlt.mark.make_hints(table_name=table)
        )

    def table_columns(
        table: str, types: dict[str, str], existing: dict[str, Any], unchecked: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """dlt columns to add for a file; a column the table has must take the file's values unchanged
        (``unchecked`` columns are not compared: their type is not known yet).

        The destination's own column types win over the dlt schema's: a table made by an earlier
        pipeline, or by hand, is what COPY will write into.
        """
        new_columns = []
        in_destination = (destination_types or {}).get(table, {})
        for name, pg_type in types.items():
            found = in_destination.get(name) or (column_pg_type(existing[name]) if name in existing else None)
            if found is None:
                new_columns.append(dlt_column(name, pg_type))
                continue
            has = comparable(found)
            if name not in existing:
                new_columns.append(dlt_column(name, found))
            if name not in unchecked and not accepts(has, comparable(pg_type)):
                raise CsvFileError(file_url_of[0], checks.type_conflict(name, table, pg_type, has))
        return new_columns

    def batches(file: FileItemDict, table: str, entry: FileReport, taken: Fingerprint) -> Iterator[Any]:
        entry.path = "arrow"
        if on_bad_file == "skip":  # read it once before yielding anything: a bad file adds no rows
            for _ in read_csv_batches(file, options):
                pass
        for batch in read_csv_batches(file, options):
            batch = types.align(table, batch, file["file_url"])
            entry.rows += batch.num_rows
            if progress:
                progress(batch.nbytes)
            yield dlt.mark.with_table_name(batch, table)

    def csv_rows(files: list[FileItemDict]) -> Iterator[Any]:
        ledger: dict[str, Any] = dlt.current.resource_state().setdefault(LEDGER_KEY, {})
        fresh = []
        for file in files:
            if not full_refresh and ledger.get(file["file_url"]) == stamp(file):
                report.unchanged += 1
                continue
            fresh.append(file)
        for taken in ready.take(fresh):
            file, version = taken.file, taken.fingerprint.stamp()
            loaded = None if full_refresh else ledger.get(file["file_url"])
            if loaded == version:
                report.unchanged += 1
                continue
            table = table_name or table_name_for(file["file_name"])
            entry = FileReport(file_url=file["file_url"], table=table, size_bytes=taken.fingerprint.size)
            file_url_of[:] = [file["file_url"]]
            report.files.append(entry)
            try:
                if refuse_changed and loaded is not None:
                    raise CsvFileError(file["file_url"], changed_since_loaded(loaded, version))
                yield from (staged if fast else batches)(file, table, entry, taken.fingerprint)
            except SourceChanged as exc:  # a producer wrote to it while it was read: the next run takes it
                report.files.remove(entry)
                report.not_ready.append(NotReady(file["file_url"], f"changed while it was read ({exc.difference})"))
                continue
            except CsvFileError as exc:
                entry.status, entry.error = ("skipped" if on_bad_file == "skip" else "failed"), exc.problem
                entry.rows = 0
                if on_bad_file == "fail":
                    raise
                continue
            report.stamps[file["file_url"]] = ledger[file["file_url"]] = version

    return listing | dlt.transformer(name=RESOURCE_NAME)(csv_rows)

