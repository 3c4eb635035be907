"""Health checks: the config DB, the Prefect API, and every connector's source and destination.

Each check answers OK, WARN or FAIL with a reason, secrets masked. Each kind says how it is
probed (its `KIND.probe`: a login accepted, a bucket or folder listed, a host key verified, an
endpoint answering); nothing is written anywhere. The doctor also runs the stale-run sweep (runs
whose worker stopped responding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cai_common import mask_secrets
from cai_common.kinds import Caution


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


def connector_checks(url: str | None = None) -> list[Check]:
    """Source and destination checks for every connector (a config that does not parse is a FAIL)."""
    from cai_common.secret_refs import plaintext_secrets
    from dlt_destinations import DESTINATIONS
    from dlt_sources import SOURCES
    from flows.store.catalog import list_connectors
    from flows.store.connector_config import ConnectorConfig, read_connector_config

    checks: list[Check] = []
    try:
        rows = list_connectors(url)
    except Exception as exc:
        import psycopg2.errors

        hint = ": run `cai init-db`" if isinstance(exc, psycopg2.errors.UndefinedTable) else ""
        return [Check("connectors", "cai_connectors", False, mask_secrets(f"{type(exc).__name__}: {exc}")[:200] + hint)]
    for row in rows:
        label = f"connector {row['id']} ({row['name']})"
        try:
            stored = read_connector_config(int(row["id"]), url)
            connector = ConnectorConfig.from_dict(stored)
        except Exception as exc:
            checks.append(Check(f"{label} config", "", False, mask_secrets(str(exc))[:300]))
            continue
        secrets = connector.secret_values()
        plaintext = [f"{side} `{name}`" for side, model, raw in (
            ("source", connector.source, stored["source_config"]),
            ("destination", connector.destination, stored["destination_config"]))
            for name in plaintext_secrets(raw, type(model).secret_fields())]
        if plaintext:
            checks.append(Check(f"{label} secrets", "", True, "plaintext in " + ", ".join(plaintext) +
                                ': store each as {"secret": "env:NAME"} or {"secret": "prefect:BLOCK"}', warn=True))
        for side, config in (("source", connector.source), ("destination", connector.destination)):
            cleartext = _credentials_in_clear(config)
            if cleartext:
                checks.append(Check(f"{label} {side} transport", mask_secrets(cleartext[1], secrets), True,
                                    f"sends credentials over plain http:// (`{cleartext[0]}`): anyone on the path "
                                    "can read them; use an https:// endpoint", warn=True))
        for side, registry, kind, config in (
            ("source", SOURCES, connector.source_type, connector.source),
            ("destination", DESTINATIONS, connector.destination_type, connector.destination),
        ):
            try:
                probe = registry.kind(kind).probe(config)
            except Exception as exc:
                checks.append(Check(f"{label} {side}", "", False, mask_secrets(str(exc), secrets)))
                continue
            checks.append(_probe(f"{label} {side} ({kind})", probe.target, probe.check, secrets))
    return checks


def _credentials_in_clear(config: object) -> tuple[str, str] | None:
    """(field, URL) where a config sends its credentials to a plain `http://` endpoint (REST `url`, S3
    `endpoint_url`), else None."""
    secrets = config.secret_values() if hasattr(config, "secret_values") else []
    for field in ("url", "endpoint_url"):
        value = getattr(config, field, None)
        if isinstance(value, str) and value.lower().startswith("http://") and secrets:
            return field, value
    return None


def run_checks(url: str | None = None) -> list[Check]:
    """Every check, in order: config DB, stale runs, Prefect API and deployment, then the connectors."""
    from cai_common.probes import postgres_version
    from flows.orchestration.heartbeat import sweep_stale_runs
    from flows.store.config_store import database_url, ensure_current_schema

    dsn = url or database_url()
    checks = [_probe("config database", dsn, lambda: postgres_version(dsn))]  # URL passwords are always masked
    if checks[0].ok:
        checks.append(_probe("config store schema", "cai_schema_migrations",
                             lambda: f"version {ensure_current_schema(dsn)}"))
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
    from flows.orchestration import trigger

    try:
        api = trigger.api_url()
    except Exception as exc:
        return [Check("prefect api", "PREFECT_API_URL", False, str(exc))]
    checks = [_probe("prefect api", api, trigger.health)]
    if checks[0].ok:
        checks.append(_probe("prefect deployment", api, lambda: f"id {trigger.deployment_id()}"))
    if checks[-1].ok:
        checks.append(_probe("unrecorded flow runs", "cai_connector_runs", _record_unrecorded))
    return checks


def _record_unrecorded() -> str:
    from flows.orchestration.heartbeat import record_unrecorded_flow_runs

    recorded = record_unrecorded_flow_runs()
    listed = ", ".join(f"{r['prefect_flow_run_id']} (connector {r['connector_id']})" for r in recorded)
    return f"recorded {len(recorded)} flow run(s) that ended before they began as failed: {listed}" if recorded \
        else "none"
