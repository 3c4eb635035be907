"""A named library of awkward inputs, reused by source and destination tests."""

from __future__ import annotations

# Each row: (id, name, note, amount, seen_at, flag). The note column carries the hard cases.
AWKWARD_HEADER = ["id", "name", "note", "amount", "seen_at", "flag"]
AWKWARD_ROWS: list[list[str]] = [
    ["1", "José Müller", "plain", "12.50", "2024-03-01T08:15:00Z", "true"],
    ["2", "O'Brien", 'says "hello", then leaves', "-0.01", "2024-03-01T23:59:59+02:00", "false"],
    ["3", "李小龙", "line one\nline two", "1000000.25", "2024-12-31T00:00:00Z", ""],
    ["4", "", "", "", "", "true"],  # NULLs everywhere a NULL can be
    ["5", "Zoë, Jr.", "comma, inside", "0", "2025-06-15T12:00:00-05:00", "false"],
]


def awkward_csv(path, rows: list[list[str]] | None = None, header: list[str] | None = None, **open_kwargs) -> int:
    """Write the awkward rows as an RFC 4180 CSV at ``path``; returns rows written."""
    import csv

    rows = AWKWARD_ROWS if rows is None else rows
    with open(path, "w", newline="", encoding=open_kwargs.pop("encoding", "utf-8"), **open_kwargs) as f:
        writer = csv.writer(f)
        writer.writerow(header or AWKWARD_HEADER)
        writer.writerows(rows)
    return len(rows)
