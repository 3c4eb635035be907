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
    "BaseConfig", "FieldProblem", "PostgresCredentials", "mask_secrets", "CaiError", "ConnectorConfigError",
    "ConnectorError", "ConnectorNotFound", "ConnectorRunFailed", "DiskFull", "ReconciliationError",
    "UnknownTypeError", "UnsupportedPathError", "explain", "is_transient",
]
