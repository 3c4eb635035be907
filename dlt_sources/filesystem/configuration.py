"""Typed configs of file sources: the options every file kind shares, and a local/NFS folder (spec 5.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from cai_common import BaseConfig, ConnectorConfigError, FieldProblem
from cai_common.pg_types import InvalidPgType, canonical_type

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from dlt_sources.filesystem.readiness import Readiness


class CsvOptions(BaseConfig):
    """How CSV files are parsed; defaults read RFC 4180 files with a header row."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator")
    quote_char: str = Field('"', min_length=1, max_length=1, description="quote character")
    encoding: Literal["utf-8", "utf-8-sig", "latin-1"] = Field("utf-8", description="text encoding")
    header: bool = Field(True, description="first line holds the column names")
    null_values: list[str] = Field(
        default_factory=lambda: [""],
        description="strings read as NULL; only the default (empty field) allows the COPY fast path",
    )


class FileSourceOptions(CsvOptions):
    """How a file source decides what to load and what to do with a bad file."""

    full_refresh: bool = Field(False, description="reload every matching file, replacing the tables")
    on_bad_file: Literal["fail", "skip"] = Field(
        "fail", description="a malformed file fails the run, or is skipped and listed"
    )
    mode: Literal["auto", "transfer", "extract"] = Field(
        "auto", description="extract rows (postgres destinations) or transfer files (others); auto picks"
    )
    transfer: Literal["move", "copy"] = Field(
        "move", description="transfer mode: delete the source once its copy is verified, or keep it"
    )
    verify: Literal["hash", "size"] = Field("hash", description="check each copy by content hash (read back) or size")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="column -> PostgreSQL type, pinned instead of inferred, e.g. {\"mrn\": \"text\"}",
    )
    settle_seconds: float | None = Field(
        None, ge=0, le=3600,
        description="take a file only once its size and modification time stayed unchanged this long; 0 turns "
                    "it off; unset: the worker's `CAI_SETTLE_SECONDS` (5) on folders, 0 on S3 and with a marker",
    )
    ready_marker: str | None = Field(
        None, min_length=1,
        description="take a file only once this marker, no older than the file, is beside it: `{name}.done` "
                    "(per file; `{stem}` is the name before its first dot) or `_SUCCESS` (the whole folder)",
    )

    @model_validator(mode="after")
    def _marker_is_a_name(self) -> Self:
        marker = self.ready_marker
        if marker is not None:
            bare = marker.replace("{name}", "").replace("{stem}", "")
            if "/" in marker or "\\" in marker or marker in (".", "..") or "{" in bare or "}" in bare:
                raise FieldProblem("ready_marker", (
                    f"must be a file name beside the files, with `{{name}}` or `{{stem}}` for one marker per file "
                    f"(e.g. `{{name}}.done`) or none for the whole folder (e.g. `_SUCCESS`), got `{marker}`"))
            if marker in ("{name}", "{stem}"):
                raise FieldProblem("ready_marker", f"must differ from the file's own name, got `{marker}`")
        return self

    def default_settle_seconds(self) -> float:
        """How long files of this kind settle when the config says nothing: the worker's `CAI_SETTLE_SECONDS`."""
        from cai_common.settings import settings

        return settings().settle_seconds

    def readiness(self) -> Readiness:
        """When a listed file may be taken: `settle_seconds`, else 0 with a marker, else the kind's default."""
        from dlt_sources.filesystem.readiness import Readiness

        if self.settle_seconds is not None:
            settle = self.settle_seconds
        else:
            settle = 0.0 if self.ready_marker else self.default_settle_seconds()
        return Readiness(settle, self.ready_marker)

    @model_validator(mode="after")
    def _pinned_types_exist(self) -> Self:
        pinned = {}
        for name, pg_type in self.columns.items():
            try:
                pinned[name] = canonical_type(str(pg_type))
            except InvalidPgType:
                raise FieldProblem(f"columns.{name}", (
                    f"must be a PostgreSQL type such as `text`, `bigint`, `numeric(10,3)`, `date`, `timestamptz`, "
                    f"`uuid` or `jsonb`, got `{pg_type}`")) from None
        object.__setattr__(self, "columns", pinned)
        return self

    # What every file kind provides (the folder below, `dlt_sources.s3` for S3 prefixes).
    file_pattern: str = Field("*", min_length=1, description="glob under `path`, e.g. *.csv or **/*.csv")

    def bucket_url(self) -> str:
        """The fsspec URL of the folder or prefix the glob runs under."""
        raise NotImplementedError

    def location(self) -> str:
        """Where the files are, for summaries and pipeline identities."""
        raise NotImplementedError

    def open_filesystem(self) -> AbstractFileSystem:
        """A filesystem carrying the source's credentials; listings are not cached between runs."""
        raise NotImplementedError

    def ensure_location(self, fs: AbstractFileSystem, connector_id: int | None = None) -> None:
        """Fail unless the folder (or bucket) exists: a missing one is an unmounted share or a typo, not
        "no files". An existing location with no matching file is fine.

        Raises:
            ConnectorConfigError: naming the connector, the field and the location.
        """
        raise NotImplementedError


class FilesystemSourceConfig(FileSourceOptions):
    """Files in a local or NFS-mounted folder."""

    path: str = Field(..., min_length=1, description="folder to read, e.g. /mnt/data/incoming")

    def bucket_url(self) -> str:
        """The fsspec URL of the folder."""
        return self.path if "://" in self.path else "file://" + self.path

    def location(self) -> str:
        """The folder's URL."""
        return self.bucket_url().rstrip("/")

    def open_filesystem(self) -> AbstractFileSystem:
        """fsspec's local filesystem."""
        import fsspec

        return fsspec.filesystem("file")

    def ensure_location(self, fs: AbstractFileSystem, connector_id: int | None = None) -> None:
        path = self.path.removeprefix("file://")
        if not fs.isdir(path):
            problem = "is a file, not a folder" if fs.exists(path) else "does not exist (an unmounted share?)"
            raise ConnectorConfigError(connector_id, "source", "path", f"`{path}` {problem}")
