"""Run heartbeats and the sweep that closes runs whose worker died.

A flow run that is killed outright (kill -9, the OOM killer, a machine lost) never reaches its
`finally`, so its record would say `started` for ever. While a run works, a daemon thread sets
`heartbeat_at` (UTC) every `CAI_HEARTBEAT_SECONDS` (30). `sweep_stale_runs` closes every
`started` run whose heartbeat is older than `CAI_HEARTBEAT_STALE_SECONDS` (120) as `failed`, with
"worker stopped responding".
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from cai_common.settings import settings
from flows.store.config_store import UTC_NOW, connect


def heartbeat_seconds() -> float:
    """How often a running flow touches its run record."""
    return settings().heartbeat_seconds


def stale_seconds() -> float:
    """How old a heartbeat may get before its run counts as dead (at least 3 heartbeats)."""
    return max(settings().heartbeat_stale_seconds, 3 * heartbeat_seconds())


def beat(run_id: int, url: str | None = None) -> None:
    """Touch one run's heartbeat."""
    with connect(url) as conn:
        conn.execute(f"UPDATE cai_connector_runs SET heartbeat_at = {UTC_NOW} WHERE id = %s", (run_id,))


@contextlib.contextmanager
def heartbeat(run_id: int | None, url: str | None = None) -> Iterator[None]:
    """Keep a run's heartbeat fresh while the block runs (a daemon thread; a failed beat is retried next time)."""
    if run_id is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(heartbeat_seconds()):
            with contextlib.suppress(Exception):  # the config DB blinking must not kill the run
                beat(run_id, url)

    thread = threading.Thread(target=loop, name=f"heartbeat-run-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def sweep_stale_runs(url: str | None = None, older_than: float | None = None) -> list[dict[str, Any]]:
    """Close `started` runs with a stale heartbeat as `failed`; returns the runs closed."""
    seconds = stale_seconds() if older_than is None else older_than
    with connect(url) as conn:
        return conn.execute(
            f"UPDATE cai_connector_runs SET status = 'failed', finished_at = {UTC_NOW}, "
            "log_summary = concat_ws('; ', log_summary, 'worker stopped responding: no heartbeat since ' "
            "  || to_char(COALESCE(heartbeat_at, started_at), 'YYYY-MM-DD HH24:MI:SS')) "
            f"WHERE status = 'started' AND COALESCE(heartbeat_at, started_at) < {UTC_NOW} - make_interval(secs => %s) "
            "RETURNING id, connector_id, prefect_flow_run_id, log_summary",
            (seconds,),
        ).fetchall()
