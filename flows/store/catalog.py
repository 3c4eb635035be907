"""Registering and listing connectors in the config store (what the backend does through its own UI)."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from flows.store.config_store import connect


def lookup_code_id(lookup_type: str, code: str, url: str | None = None) -> int:
    """Id of a seeded lookup code, e.g. (``source_type``, ``filesystem``)."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM ad_lookup_codes WHERE lookup_type = %s AND lookup_code = %s ORDER BY id LIMIT 1",
            (lookup_type, code),
        ).fetchone()
    if row is None:
        raise ValueError(f"no {lookup_type} lookup code `{code}`; run `cai init-db` first")
    return int(row["id"])


def _define(side: str, name: str, code: str, config: dict[str, Any], url: str | None) -> int:
    """Insert a defined source or destination (``side``) of lookup code ``code``; returns its id."""
    type_id = lookup_code_id(f"{side}_type", code, url)
    table, column = sql.Identifier(f"cai_defined_{side}s"), sql.Identifier(f"{side}_type_lookup_code_id")
    with connect(url) as conn:
        row = conn.execute(
            sql.SQL("INSERT INTO {} (name, {}, config) VALUES (%s, %s, %s) RETURNING id").format(table, column),
            (name, type_id, Json(config)),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def define_source(name: str, source_type: str, config: dict[str, Any], url: str | None = None) -> int:
    """Insert a defined source and return its id."""
    return _define("source", name, source_type, config, url)


def define_destination(name: str, destination_type: str, config: dict[str, Any], url: str | None = None) -> int:
    """Insert a defined destination and return its id."""
    return _define("destination", name, destination_type, config, url)


def create_connector(
    name: str,
    source_id: int | None,
    destination_id: int | None,
    source_override: dict[str, Any] | None = None,
    destination_override: dict[str, Any] | None = None,
    url: str | None = None,
) -> int:
    """Insert a connector joining a defined source and destination, with optional overrides."""
    with connect(url) as conn:
        row = conn.execute(
            "INSERT INTO cai_connectors (name, defined_source_id, defined_destination_id, "
            "source_config_override, destination_config_override) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (
                name,
                source_id,
                destination_id,
                Json(source_override) if source_override is not None else None,
                Json(destination_override) if destination_override is not None else None,
            ),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def find_connector(name: str, url: str | None = None) -> int | None:
    """Id of the newest connector with this name, if any."""
    with connect(url) as conn:
        row = conn.execute("SELECT max(id) AS id FROM cai_connectors WHERE name = %s", (name,)).fetchone()
    return int(row["id"]) if row and row["id"] is not None else None


def list_connectors(url: str | None = None) -> list[dict[str, Any]]:
    """Every connector with its source and destination names and type codes."""
    with connect(url) as conn:
        return conn.execute(
            "SELECT c.id, c.name, ds.name AS source_name, alc_s.lookup_code AS source_type, "
            "dd.name AS destination_name, alc_d.lookup_code AS destination_type "
            "FROM cai_connectors c "
            "LEFT JOIN cai_defined_sources ds ON c.defined_source_id = ds.id "
            "LEFT JOIN cai_defined_destinations dd ON c.defined_destination_id = dd.id "
            "LEFT JOIN ad_lookup_codes alc_s ON ds.source_type_lookup_code_id = alc_s.id "
            "LEFT JOIN ad_lookup_codes alc_d ON dd.destination_type_lookup_code_id = alc_d.id "
            "ORDER BY c.id"
        ).fetchall()


def set_schedule(connector_id: int, cron: str | None, url: str | None = None) -> None:
    """Set (or with None, clear) a connector's cron expression (UTC); `cai deploy` turns it into a schedule.

    Raises:
        ValueError: the expression is not a valid cron.
        LookupError: no such connector.
    """
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron, timezone="UTC")
        except Exception as exc:
            raise ValueError(f"connector {connector_id}: `schedule` must be a cron expression, got `{cron}`") from exc
    with connect(url) as conn:
        updated = conn.execute("UPDATE cai_connectors SET schedule = %s WHERE id = %s", (cron, connector_id))
        if updated.rowcount == 0:
            raise LookupError(f"connector {connector_id} does not exist")
