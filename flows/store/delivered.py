"""What copy transfers delivered, in the config store (`cai_delivered_files`), so any worker knows it.

A file is recorded the moment its copy is verified, one row per source file and connector pipeline,
holding the version copied: a run that dies mid-transfer has recorded exactly what arrived, and the
next run, on this machine or another, sends the rest. The backend can read the same table to see what
a connector delivered.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extras import Json

from flows.store.config_store import UTC_NOW, StoreConnection, connect


@dataclass
class DeliveredFiles:
    """The ledger of one connector pipeline: read once, then written file by file as copies are verified."""

    pipeline_name: str
    connector_id: int
    url: str | None = None
    _conn: StoreConnection | None = field(default=None, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def versions(self) -> dict[str, dict[str, Any]]:
        """Source file URL -> the version delivered."""
        with connect(self.url) as conn:
            rows = conn.execute("SELECT file_url, version FROM cai_delivered_files WHERE pipeline_name = %s",
                                (self.pipeline_name,)).fetchall()
        return {row["file_url"]: row["version"] for row in rows}

    def record(self, file_url: str, version: dict[str, Any], destination_url: str | None = None,
               sha256: str | None = None) -> None:
        """Record one verified copy, committed at once (called from dlt's load threads)."""
        with self._lock:
            if self._conn is None:
                self._conn = connect(self.url)
            try:
                self._conn.execute(
                    "INSERT INTO cai_delivered_files (pipeline_name, connector_id, file_url, version, "
                    f"destination_url, sha256) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (pipeline_name, file_url) "
                    f"DO UPDATE SET version = EXCLUDED.version, destination_url = EXCLUDED.destination_url, "
                    f"sha256 = EXCLUDED.sha256, delivered_at = {UTC_NOW}",
                    (self.pipeline_name, self.connector_id, file_url, Json(version), destination_url, sha256))
                self._conn.raw.commit()
            except Exception:
                self.close()
                raise

    def record_many(self, versions: dict[str, dict[str, Any]]) -> None:
        """Record files known delivered (a ledger an earlier version kept on a worker's disk)."""
        for file_url, version in versions.items():
            self.record(file_url, version)

    def close(self) -> None:
        """Close the connection `record` opened."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.raw.close()
                finally:
                    self._conn = None
