"""Typed configs of file sources: a local/NFS folder (spec 5.3) and an S3/MinIO prefix (spec 5.2)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from cai_common import BaseConfig, FieldProblem, S3Credentials
from cai_common.pg_types import InvalidPgType, canonical_type


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


class FilesystemSourceConfig(FileSourceOptions):
    """Files in a local or NFS-mounted folder."""

    path: str = Field(..., min_length=1, description="folder to read, e.g. /mnt/data/incoming")
    file_pattern: str = Field("*", min_length=1, description="glob under `path`, e.g. *.csv or **/*.csv")

    def bucket_url(self) -> str:
        """The fsspec URL of the folder."""
        return self.path if "://" in self.path else "file://" + self.path

    def location(self) -> str:
        """The folder's URL."""
        return self.bucket_url().rstrip("/")


class S3SourceConfig(FileSourceOptions, S3Credentials):
    """Objects under a prefix of an S3/MinIO bucket."""

    bucket: str = Field(..., min_length=1, description="bucket name")
    path: str = Field("", description="prefix inside the bucket, e.g. incoming")
    file_pattern: str = Field("*", min_length=1, description="glob under `path`, e.g. *.csv or **/*.csv")

    def bucket_url(self) -> str:
        """The fsspec URL of the prefix."""
        prefix = self.path.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def location(self) -> str:
        """The endpoint and the prefix's URL."""
        return f"{self.endpoint()} {self.bucket_url()}"
