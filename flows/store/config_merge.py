"""Deep merge of a connector's override onto its defined source/destination config."""

from __future__ import annotations

from typing import Any


def deep_merge(base: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """Merge ``override`` onto ``base`` without changing either.

    Nested objects merge key by key, the override wins on conflicts, and a ``null`` in the override
    removes the key (so a connector can drop, say, a defined source's `prefix`).
    """
    merged = dict(base or {})
    for key, value in (override or {}).items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
