"""Load files still being checked while they load: the check's verdict decides whether the COPY commits.

A CSV file's column types come from every one of its values, and looking at all of them takes a
pass over the file. Done before the load, that pass is time during which PostgreSQL waits. A source
may instead create the table from the types of the file's first rows and register, under the file's
identity (device and inode, as `streams` does: dlt hard-links an imported file into its load
package), a `Check` whose verdict a pass running beside the COPY delivers. The destination's COPY
then commits only once the verdict is in and the table's columns take every value unchanged; a
column created by this load with a type the verdict does not confirm is given the verdict's type and
the file is COPYed again, in the same transaction. A file the pass finds bad fails without a row
landing. The registry lives in this process only.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verdict:
    """What a pass over every value found: the file's records and each column's PostgreSQL type."""

    rows: int
    types: dict[str, str]


@dataclass
class Check:
    """A load file's pending verdict, and what its load may change to honour it."""

    verdict: Future[Verdict]
    """Raises the file's own error (a `CaiError` naming it) when the pass finds the file bad."""
    new_columns: frozenset[str]
    """Columns this load creates: only these may be given another type once the verdict is in."""
    altered: dict[str, str] = field(default_factory=dict)
    """Column -> type the load gave a new column after the verdict (for the pipeline's schema)."""


_CHECKS: dict[tuple[int, int], Check] = {}
_KEYS: dict[str, tuple[int, int]] = {}  # path -> identity, to forget a file already removed
_LOCK = threading.Lock()


def _identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def register(path: str | os.PathLike[str], check: Check) -> None:
    """Have the load of the file at ``path`` (or any hard link of it) wait for ``check``'s verdict."""
    key = _identity(path)
    with _LOCK:
        _CHECKS[key] = check
        _KEYS[str(path)] = key


def check_for(path: str | os.PathLike[str]) -> Check | None:
    """The check registered for this file, if any."""
    with _LOCK:
        return _CHECKS.get(_identity(path))


def forget_check(check: Check) -> None:
    """Drop the registration of ``check`` (its run is over; its file may be gone already)."""
    with _LOCK:
        for key in [k for k, c in _CHECKS.items() if c is check]:
            del _CHECKS[key]
        for path in [p for p, k in _KEYS.items() if k not in _CHECKS]:
            del _KEYS[path]


def type_conflict(column: str, table: str, values_type: str, table_type: str) -> str:
    """Why a file's column cannot go into an existing column: the types, and what to do."""
    return (f"column `{column}` holds {values_type} values but table `{table}` already has it as {table_type}; "
            f"loading would change them. Pin the column's type in the source's `columns` "
            f"(e.g. {{\"{column}\": \"{values_type}\"}}) for a new table, or load this file into its own table")


__all__ = ["Check", "Verdict", "check_for", "forget_check", "register", "type_conflict"]
