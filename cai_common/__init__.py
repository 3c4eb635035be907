"""Mechanics shared by sources, destinations and flows: typed config bases, errors, secret masking.

Exports load on first use (errors and configs import dlt and pydantic), so `cai --help` and a
module that only masks secrets pay for neither.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cai_common.lazy import lazy_exports

# pyarrow's allocator (mimalloc, set up when pyarrow loads, so here, before any module of this package
# imports it) commits whole arenas at once and keeps freed pages for a while. Typing a 2M-row CSV
# peaked 42 MB higher with its defaults, and held that through the COPY; no slower without. An
# operator's own setting wins.
for _option in ("MIMALLOC_ARENA_EAGER_COMMIT", "MIMALLOC_PURGE_DELAY"):
    os.environ.setdefault(_option, "0")


def exit_without_final_collection() -> None:
    """Let this process end without the interpreter's last cyclic garbage collections.

    On its way out the interpreter collects every object in a cycle, and a process that has imported dlt
    holds enough of them for that to take 0.4-0.6 s (0.6 with Prefect too) after the work is done:
    the end of every `cai` command and cold flow run. Freezing them, as the last exit handler
    registered so far, skips that pass: the memory goes back to the system with the process, and
    nothing this product writes waits on it (files are closed, fsynced and renamed, logging and
    Prefect's workers flushed, before it).
    """
    import atexit
    import gc

    atexit.register(gc.freeze)


if TYPE_CHECKING:
    from cai_common.configuration import BaseConfig, FieldProblem, PostgresCredentials
    from cai_common.errors import (
        CaiError,
        ConnectorConfigError,
        ConnectorError,
        ConnectorNotFound,
        ConnectorRunFailed,
        DiskFull,
        ReconciliationError,
        UnknownTypeError,
        UnsupportedPathError,
        explain,
        is_transient,
    )
    from cai_common.secrets import mask_secrets

_ERRORS = ("CaiError", "ConnectorConfigError", "ConnectorError", "ConnectorNotFound", "ConnectorRunFailed",
           "DiskFull", "ReconciliationError", "UnknownTypeError", "UnsupportedPathError", "explain", "is_transient")
__getattr__ = lazy_exports(__name__, {
    "BaseConfig": "configuration", "FieldProblem": "configuration", "PostgresCredentials": "configuration",
    "mask_secrets": "secrets", **dict.fromkeys(_ERRORS, "errors"),
    "progress": "progress", "streams": "streams",
})

__all__ = [
    "exit_without_final_collection",
    "BaseConfig", "FieldProblem", "PostgresCredentials", "mask_secrets", "CaiError", "ConnectorConfigError",
    "ConnectorError", "ConnectorNotFound", "ConnectorRunFailed", "DiskFull", "ReconciliationError",
    "UnknownTypeError", "UnsupportedPathError", "explain", "is_transient",
]
