"""Health checks: the config DB, the Prefect API, and every connector's source and destination.

Each check answers OK or FAIL with a reason, secrets masked. Reachability means: a database
accepts a login, a bucket or folder can be listed, an SFTP server accepts the login (host key
verified), a REST endpoint answers HTTP at all. Nothing is written anywhere. The doctor also runs
the stale-run sweep (runs whose worker stopped responding).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cai_common import mask_secrets


@dataclass
class Check:
    """One line of the report."""

    check: str
    target: str
    ok: bool
    detail: str
    warn: bool = False
    """Works, but something needs a person's attention (a source login that can write)."""

    def as_row(self) -> dict[str, str]:
        status = "FAIL" if not self.ok else "WARN" if self.warn else "OK"
        return {"check": self.check, "target": self.target, "status": status, "detail": self.detail}


class Caution(str):
    """A probe's answer that passes with a warning."""


def _probe(check: str, target: str, probe: Callable[[], str], secrets: Sequence[str] = ()) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
        return Check(check, mask_secrets(target, secrets), True,
                     mask_secrets(f"{detail} ({(time.monotonic() - started) * 1000:.0f} ms)", secrets),
                     warn=isinstance(detail, Caution))
    except Exception as exc:
        return Check(check, mask_secrets(target, secrets), False,
                     mask_secrets(f"{type(exc).__name__}: {exc}".strip(), secrets)[:300])


def _postgres(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {version[0] if version else '?'}"


def _source_login(dsn: str) -> str:
    """The server answers; a login that could write is a warning (queries should run as a read-only role)."""
    import psycopg

    from dlt_sources.sql_database.login import LOGIN_POWERS, write_powers

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        powers = write_powers(conn.execute(LOGIN_POWERS).fetchone())
    server = f"PostgreSQL {version[0] if version else '?'}"
    if powers:
        return Caution(f"{server}; {powers}: a query's functions could write through it, use a read-only role "
                       "(README: Queries only read)")
    return f"{server}; the login can only read"


def _folder(path: str, must_exist: bool) -> str:
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


def _bucket(storage_options: dict[str, Any], bucket: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    fs.ls(bucket, refresh=True)
    return f"bucket `{bucket}` listed"


def _source_probe(connector: Any) -> tuple[str, Callable[[], str]]:
    from dlt_sources import FilesystemSourceConfig, S3SourceConfig, SqlDatabaseSourceConfig

    source = connector.source
    if isinstance(source, SqlDatabaseSourceConfig):
        return source.dsn(dummy_password=True), lambda: _source_login(source.dsn())
    if isinstance(source, S3SourceConfig):
        return source.bucket_url(), lambda: _bucket(source.storage_options(), source.bucket)
    assert isinstance(source, FilesystemSourceConfig)
    return source.path, lambda: _folder(source.path, must_exist=True)


def _destination_probe(connector: Any) -> tuple[str, Callable[[], str]]:
    from dlt_destinations.nfs import NfsDestinationConfig
    from dlt_destinations.postgres import PostgresDestinationConfig
    from dlt_destinations.rest_api import RestApiDestinationConfig
    from dlt_destinations.s3 import S3DestinationConfig
    from dlt_destinations.sftp import SftpDestinationConfig

    target = connector.destination
    if isinstance(target, PostgresDestinationConfig):
        return target.dsn(dummy_password=True), lambda: _postgres(target.dsn())
    if isinstance(target, S3DestinationConfig):
        return f"s3://{target.bucket}/{target.prefix}", lambda: _bucket(target.storage_options(), target.bucket)
    if isinstance(target, NfsDestinationConfig):
        return target.path, lambda: _folder(target.path, must_exist=False)
    if isinstance(target, SftpDestinationConfig):
        def sftp() -> str:
            from dlt_destinations.sftp.client import open_sftp

            fs = open_sftp(target)
            return "login OK, " + ("directory present" if fs.exists(target.path) else "directory will be created")
        return f"sftp://{target.username}@{target.host}:{target.port}{target.path}", sftp
    assert isinstance(target, RestApiDestinationConfig)

    def rest() -> str:
        import requests

        response = requests.head(target.url.split("{", 1)[0], timeout=5, allow_redirects=False)
        return f"HTTP {response.status_code}"
    return target.url, rest


def connector_checks(url: str | None = None) -> list[Check]:
    """Source and destination checks for every connector (a config that does not parse is a FAIL)."""
    from flows.catalog import list_connectors
    from flows.connector_config import ConnectorConfig, read_connector_config

    checks = []
    for row in list_connectors(url):
        label = f"connector {row['id']} ({row['name']})"
        try:
            connector = ConnectorConfig.from_dict(read_connector_config(int(row["id"]), url))
        except Exception as exc:
            checks.append(Check(f"{label} config", "", False, mask_secrets(str(exc))[:300]))
            continue
        secrets = connector.secret_values()
        for side, probe_for in (("source", _source_probe), ("destination", _destination_probe)):
            try:
                target, probe = probe_for(connector)
            except Exception as exc:
                checks.append(Check(f"{label} {side}", "", False, mask_secrets(str(exc), secrets)))
                continue
            kind = connector.source_type if side == "source" else connector.destination_type
            checks.append(_probe(f"{label} {side} ({kind})", target, probe, secrets))
    return checks


def run_checks(url: str | None = None) -> list[Check]:
    """Every check, in order: config DB, stale runs, Prefect API and deployment, then the connectors."""
    from flows.config_store import database_url
    from flows.heartbeat import sweep_stale_runs

    dsn = url or database_url()
    checks = [_probe("config database", dsn, lambda: _postgres(dsn))]  # URL passwords are always masked
    if checks[0].ok:
        def sweep() -> str:
            closed = sweep_stale_runs(dsn)
            listed = ", ".join(f"run {r['id']} (connector {r['connector_id']})" for r in closed)
            return f"closed {len(closed)} run(s) of dead workers as failed: {listed}" if closed else "none"
        checks.append(_probe("stale runs", "cai_connector_runs", sweep))
    checks.extend(prefect_checks())
    if checks[0].ok:
        checks.extend(connector_checks(dsn))
    return checks


def prefect_checks() -> list[Check]:
    """The Prefect API answers, and the deployment exists on it."""

    from flows import trigger

    try:
        api = trigger.api_url()
    except Exception as exc:
        return [Check("prefect api", "PREFECT_API_URL", False, str(exc))]

    def health() -> str:
        response = trigger.call("GET", f"{api}/health")
        response.raise_for_status()
        return f"HTTP {response.status_code}"

    checks = [_probe("prefect api", api, health)]
    if checks[0].ok:
        checks.append(_probe("prefect deployment", api, lambda: f"id {trigger.deployment_id(api)}"))
    return checks
