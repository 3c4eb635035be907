"""What a file source run did, file by file, and the errors it raises; no pyarrow needed here.

The ledger key and file stamps are shared by CSV loading (`resource`) and transfers (`manifests`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dlt.common.exceptions import TerminalValueError
from dlt.common.storages.fsspec_filesystem import FileItemDict

from cai_common import CaiError


class CsvFileError(CaiError, TerminalValueError):
    """A CSV file that cannot be read (bad encoding, wrong column count, empty)."""

    def __init__(self, file_url: str, problem: str) -> None:
        self.file_url = file_url
        self.problem = problem
        super().__init__(f"file `{file_url}`: {problem}")


class BadFilesError(CaiError, TerminalValueError):
    """Files of a run that failed to load, each listed with its error (the run's other files loaded)."""

    def __init__(self, failures: list[Any], done: str | None = None, metrics: dict[str, Any] | None = None) -> None:
        self.failures = failures
        self.metrics = metrics or {}  # every file's result, so a failed run's record still lists them all
        listed = "; ".join(f"file `{f.file_url}`: {f.error}" for f in failures)
        super().__init__(f"{len(failures)} file(s) failed: {listed}" + (f" ({done})" if done else ""))


LEDGER_KEY = "files"
"""Resource-state key of the ledger of loaded files."""

RESOURCE_NAME = "csv_rows"

TYPED_BESIDE_LOAD = "cai_typed_beside_load"
"""Load package state: staged file inode -> its source URL and the columns its load creates, for each
file whose typing pass runs beside its COPY (`cai_common.checks`)."""


@dataclass(eq=False)
class FileReport:
    """What happened to one source file in a run; lands in the run's metrics."""

    file_url: str
    table: str
    size_bytes: int | None
    rows: int = 0
    status: Literal["loaded", "failed", "skipped"] = "loaded"
    error: str | None = None
    path: Literal["copy", "transcoded", "arrow"] = "copy"
    """copy: COPY reads the file as it is; transcoded: rewritten as psql's CSV first; arrow: read by pyarrow."""
    inode: int | None = field(default=None, repr=False)
    """Inode of the staged load file, to match the load job that COPYs it (not in metrics)."""
    check: Any = field(default=None, repr=False)
    """The file's `cai_common.checks.Check` while its typing pass runs beside the load (not in metrics)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON metrics."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("inode", "check")}


@dataclass
class ReadReport:
    """Per-file reports of one extraction, filled while dlt pulls the resource."""

    files: list[FileReport] = field(default_factory=list)
    unchanged: int = 0
    not_ready: list[Any] = field(default_factory=list)
    """`readiness.NotReady` of every file left for the next run (still being written, or no marker yet)."""
    stamps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows of the files that loaded."""
        return sum(f.rows for f in self.files if f.status == "loaded")

    def rows_by_table(self) -> dict[str, int]:
        """Rows loaded into each table."""
        tables: dict[str, int] = {}
        for f in self.files:
            if f.status == "loaded":
                tables[f.table] = tables.get(f.table, 0) + f.rows
        return tables

    def files_of(self, tables: set[str]) -> list[FileReport]:
        """Reports of the files that fed any of these tables."""
        return [f for f in self.files if f.table in tables]


def stamp(file: FileItemDict) -> dict[str, Any]:
    """What identifies a file's version: modification date and size."""
    return {"modified": str(file["modification_date"]), "size": file["size_in_bytes"]}


def changed_since_loaded(loaded: dict[str, Any], now: dict[str, Any]) -> str:
    """Why a file loaded before is refused under ``append``: its rows would land twice."""
    return (f"was loaded before ({loaded.get('size')} bytes, modified {loaded.get('modified')}) and has changed since "
            f"({now.get('size')} bytes, modified {now.get('modified')}): with `write_disposition` `append` the rows "
            "it held then would land twice, so it is not loaded again. Load its new version with `merge` (and a "
            "`primary_key`) or `replace`, with `full_refresh`, or under a new file name")
