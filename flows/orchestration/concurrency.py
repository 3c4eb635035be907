"""One run per connector at a time: a PostgreSQL session advisory lock in the config store.

A run takes the lock (key: `RUN_LOCK_NAMESPACE`, the connector id) on a connection of its own before
it creates its run record or touches any data, and holds it until it ends. A second run of the
connector waits for it (up to `CAI_CONNECTOR_WAIT_SECONDS`, default 3600); runs of different
connectors take different keys and go in parallel.

A run killed outright (kill -9, the OOM killer) frees the lock at once: its process's socket closes
and PostgreSQL drops the lock with the session. A machine that vanishes is noticed by the server's
TCP keepalives, set on the session, within about half a minute. Nothing waits for a lease to lapse,
and nothing depends on the Prefect server running its lease service or remembering leases across a
restart (a temporary server, as `cai run` starts, does neither).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.errors

from cai_common.settings import settings

RUN_LOCK_NAMESPACE = 0x6361_6972
"""First key of the two-key advisory lock (the second is the connector id); `pg_locks.classid`."""

# The server's side of the keepalives: a session whose machine vanished is closed within
# idle + interval * count seconds, and its lock freed.
_SESSION_SETTINGS = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
                     "statement_timeout": "0", "idle_in_transaction_session_timeout": "0"}


def wait_seconds() -> float:
    """How long a run waits for its connector's slot before failing."""
    return settings().connector_wait_seconds


def describe(connector_id: int) -> str:
    """How the lock shows in logs and in `pg_locks`."""
    return f"advisory lock ({RUN_LOCK_NAMESPACE}, {connector_id})"


@contextlib.contextmanager
def one_run_per_connector(connector_id: int, timeout: float | None = None, url: str | None = None) -> Iterator[None]:
    """Hold the connector's run lock for the block; TimeoutError if another run keeps it past ``timeout``."""
    from flows.store.config_store import database_url

    timeout = wait_seconds() if timeout is None else timeout
    # psycopg2, the driver the run's data path loads anyway (dlt's PostgreSQL destination).
    conn = psycopg2.connect(url or database_url(), connect_timeout=10,
                            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        settings = dict(_SESSION_SETTINGS)
        if conn.server_version >= 140000:  # a DBA's idle_session_timeout must not drop the lock
            settings["idle_session_timeout"] = "0"
        cursor.execute("SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(settings)),
                       [item for pair in settings.items() for item in pair])
        if timeout <= 0:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", (RUN_LOCK_NAMESPACE, connector_id))
            taken = cursor.fetchone()
            if not (taken and taken[0]):
                raise TimeoutError(f"connector {connector_id}: another run holds it")
        else:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)",
                           (f"{min(int(timeout * 1000), 2**31 - 1)}ms",))
            try:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_NAMESPACE, connector_id))
            except psycopg2.errors.LockNotAvailable as exc:
                raise TimeoutError(f"connector {connector_id}: another run held it for over {timeout:.0f} s") from exc
            cursor.execute("SELECT set_config('lock_timeout', '0', false)")
        yield
    finally:
        conn.close()  # the session ends, and the lock with it
