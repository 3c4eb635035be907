"""`cai load-csv`: CSV files (a local path, or a URL a file source kind reads) into PostgreSQL without a connector."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from dlt.common.storages.fsspec_filesystem import glob_files

from cai_common import CaiError, ConnectorConfigError
from dlt_destinations.postgres import PostgresDestinationConfig
from dlt_sources import SOURCES
from dlt_sources.filesystem import FileSourceOptions, open_filesystem
from flows.paths.pipelines import PathOutcome
from flows.paths.tables import load_csv_files

_GLOB_CHARS = set("*?[")


def split_location(location: str) -> tuple[str, str]:
    """Split a path or URL with an optional glob into (base folder/prefix, glob under it).

    ``/data/in/*.csv`` -> (``/data/in``, ``*.csv``); ``/data/in`` (a folder) -> (``/data/in``, ``*.csv``);
    ``s3://b/in/2024/**/*.csv`` -> (``s3://b/in/2024``, ``**/*.csv``); a single file -> (its folder, its name).
    """
    scheme, sep, rest = location.partition("://")
    if not sep:
        scheme, rest = "", location
    parts = PurePosixPath(rest).parts
    for index, part in enumerate(parts):
        if _GLOB_CHARS & set(part):
            base = str(PurePosixPath(*parts[:index])) if index else ""
            pattern = str(PurePosixPath(*parts[index:]))
            return (f"{scheme}://{base}" if scheme else base or "."), pattern
    if not scheme and Path(location).is_dir():
        return location, "*.csv"
    if scheme and location.endswith("/"):
        return location.rstrip("/"), "*.csv"
    parent, name = str(PurePosixPath(rest).parent), PurePosixPath(rest).name
    return (f"{scheme}://{parent}" if scheme else parent), name


class ColumnOptionError(CaiError, ValueError):
    """A `--column` option that is not `name:type` with a PostgreSQL type."""


def pinned_columns(options: list[str]) -> dict[str, str]:
    """`--column mrn:text --column dose:numeric(10,3)` -> {"mrn": "text", "dose": "numeric(10,3)"}."""
    pinned = {}
    for option in options:
        name, sep, pg_type = option.partition(":")
        if not sep or not name.strip() or not pg_type.strip():
            raise ColumnOptionError(f"--column `{option}` must be NAME:TYPE, e.g. mrn:text or dose:numeric(10,3)")
        pinned[name.strip()] = pg_type.strip()
    return pinned


def source_for(
    location: str, replace: bool, columns: dict[str, str] | None = None, *,
    settle_seconds: float | None = None, ready_marker: str | None = None,
) -> FileSourceOptions:
    """The config of the file source kind that reads the location's URL scheme (S3 credentials come
    from MINIO_* variables); ``settle_seconds`` and ``ready_marker`` as a connector's source takes them.

    Raises:
        ColumnOptionError: a pinned column type that is not a PostgreSQL type (the `--column` named).
    """
    base, pattern = split_location(location)
    common = {"file_pattern": pattern, "full_refresh": replace, "columns": columns or {},
              "settle_seconds": settle_seconds, "ready_marker": ready_marker}
    scheme = base.split("://", 1)[0].lower() if "://" in base else ""
    kind = SOURCES.for_scheme(scheme)
    if kind is None or kind.from_url is None:
        schemes = sorted(f"{s}://" for k in SOURCES.kinds.values() for s in k.url_schemes if s)
        raise ValueError(f"`{location}`: give a local path or a URL starting with {', '.join(schemes)}")
    try:
        config = kind.config.parse({**kind.from_url(base), **common}, connector_id=None, side="source")
        assert isinstance(config, FileSourceOptions)
        return config
    except ConnectorConfigError as exc:
        if exc.field and exc.field.startswith("columns."):
            raise ColumnOptionError(f"--column {exc.field.removeprefix('columns.')}: {exc.problem}") from None
        raise


def matched_bytes(source: FileSourceOptions) -> tuple[int, int, int | None]:
    """(files, bytes, bytes COPY will read) of the files matching the source's glob, for the progress
    bars. COPY reads the files as they are when they are uncompressed and in a dialect it reads;
    the third is None where they are decompressed or transcoded first (their size is known later)."""
    from dlt_sources.filesystem.staging import supports_fast_path

    files = list(glob_files(open_filesystem(source), source.bucket_url(), source.file_pattern))
    size = sum(int(f["size_in_bytes"] or 0) for f in files)
    as_they_are = supports_fast_path(source) and not any(f["file_name"].endswith(".gz") for f in files)
    return len(files), size, (size or None) if as_they_are else None


def load_csv(
    location: str | FileSourceOptions, dsn: str, schema: str = "public", table: str | None = None,
    replace: bool = False, progress: Callable[[int], None] | None = None,
    columns: dict[str, str] | None = None,
) -> PathOutcome:
    """Load the CSV files at ``location`` (or of a source made by `source_for`) into ``schema`` of the
    database at ``dsn``.

    Files already loaded by an earlier `load-csv` of the same location, schema and table are not read
    again unless ``replace`` (which reloads every file and replaces the tables).
    """
    source = location if isinstance(location, FileSourceOptions) else source_for(location, replace, columns)
    replace = source.full_refresh
    target = PostgresDestinationConfig.parse(
        {"connection_string": dsn, "schema": schema, "table_name": table,
         "write_disposition": "replace" if replace else "append"},
        connector_id=None, side="destination",
    )
    # One pipeline (and so one loaded-files ledger) per source location and pattern, and target database,
    # schema and table.
    identity = f"{source.location()}|{source.file_pattern}|{target.location()}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    # Earlier versions keyed the pipeline by location, schema and table only: adopt its ledger once.
    old_key = hashlib.sha1(f"{source.bucket_url()}|{source.file_pattern}|{schema}|{table}".encode(),
                           usedforsecurity=False).hexdigest()[:12]
    return load_csv_files(f"load_csv_{key}", source, target, progress=progress, legacy=f"load_csv_{old_key}")
