"""Probes kinds share for `cai doctor`: a PostgreSQL server answering a login, a local folder's access."""

from __future__ import annotations

import os
from typing import Any


def postgres_version(dsn: str) -> str:
    """`PostgreSQL <version>` once a login succeeded."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return server_version(conn)


def server_version(conn: Any) -> str:
    """`PostgreSQL <version>` of an open connection."""
    version = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {version[0] if version else '?'}"


def folder_access(path: str, must_exist: bool) -> str:
    """A folder to read (``must_exist``) or to write into (created when missing, under a writable parent)."""
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(f"`{path}` is not readable")
        if not must_exist and not os.access(path, os.W_OK):
            raise PermissionError(f"`{path}` is not writable")
        return "folder present"
    if must_exist:
        raise FileNotFoundError(f"`{path}` does not exist")
    parent = os.path.dirname(path.rstrip("/")) or "/"
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent) or "/"
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"`{path}` is missing and `{parent}` is not writable")
    return f"will be created under `{parent}`"
