"""Column names as dlt will store them: normalised by dlt's snake_case convention and made unique."""

from __future__ import annotations

from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCaseNaming

# PostgreSQL's identifier limit (63 bytes): longer names get dlt's own shortening (a hash tail), the
# same the destination's schema applies, so the file's header and the table agree.
_NAMING = SnakeCaseNaming(max_length=63)


def column_names(header: list[str] | None, width: int) -> list[str]:
    """dlt's names for a file's or a query's columns: ``header`` normalised (made unique), or column_1..N."""
    raw = header if header is not None else [f"column_{i + 1}" for i in range(width)]
    names: list[str] = []
    for index, name in enumerate(raw):
        base = _NAMING.normalize_identifier(name.strip() or f"column_{index + 1}")
        candidate, suffix = base, 2
        while candidate in names:
            candidate, suffix = _NAMING.normalize_identifier(f"{base}_{suffix}"), suffix + 1
        names.append(candidate)
    return names


def table_name(name: str) -> str:
    """dlt's name for a table."""
    return _NAMING.normalize_table_identifier(name)


__all__ = ["column_names", "table_name"]
