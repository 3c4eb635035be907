"""What a query run did, and the error a database's refusal becomes; no driver imported here."""

from __future__ import annotations

from dataclasses import dataclass, field

from cai_common import ConnectorError


class QueryError(ConnectorError):
    """The database refused or failed the query (a read-only violation, a missing table...)."""


@dataclass
class QueryReport:
    """How a query was read: which reader, how many batches and rows."""

    reader: str = "connectorx"
    batches: int = 0
    rows: int = 0
    fallback_reason: str | None = None
    stream_files: list[str] = field(default_factory=list)
    """Placeholder load files standing for streamed rows (`cai_common.streams`), forgotten after the load."""
    streams_opened: int = 0
    """How many times a load job opened the stream: 0 after a load means the rows never moved."""
    as_text: list[str] = field(default_factory=list)
    """Columns whose type has no exact equivalent in the destination, landed as text (`name (type)`)."""
