"""One run per connector at a time: a Prefect global concurrency limit `connector-<id>` of 1 slot.

A second run of a connector waits for the slot (up to `CAI_CONNECTOR_WAIT_SECONDS`, default 3600)
before it creates its run record or touches any data; runs of different connectors take different
limits and go in parallel. The slot is a lease the holder renews; a run whose process is killed
stops renewing it, and the server frees the slot once the lease runs out (`LEASE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

LEASE_SECONDS = 60.0


def limit_name(connector_id: int) -> str:
    """The global concurrency limit guarding one connector."""
    return f"connector-{connector_id}"


def wait_seconds() -> float:
    """How long a run waits for its connector's slot before failing."""
    return float(os.environ.get("CAI_CONNECTOR_WAIT_SECONDS", "3600"))


def ensure_limit(connector_id: int) -> None:
    """Create the connector's 1-slot limit unless it exists (safe when two runs race to create it)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    name = limit_name(connector_id)
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, 1)
        except Exception:  # a concurrent creation answered 409: it exists now, which is all we need
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                raise


@contextlib.contextmanager
def one_run_per_connector(connector_id: int, timeout: float | None = None) -> Iterator[None]:
    """Hold the connector's slot for the block; TimeoutError if another run keeps it past ``timeout``."""
    from prefect.concurrency.sync import concurrency

    ensure_limit(connector_id)
    with concurrency(limit_name(connector_id), occupy=1, strict=True, lease_duration=LEASE_SECONDS,
                     timeout_seconds=wait_seconds() if timeout is None else timeout):
        yield
