"""Lazy package exports: heavy modules (pyarrow, connectorx, sqlglot) load on first use, not on import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that imports ``package.<modules[name]>`` when ``name`` is first used."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(f"{package}.{modules[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
