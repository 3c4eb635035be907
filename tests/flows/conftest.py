"""Fixtures for flow tests: registering connectors in the session's config store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.awkward import AWKWARD_ROWS


@pytest.fixture
def make_connector(config_store: str) -> Callable[..., int]:
    """Register a defined source, a defined destination and a connector; return the connector id."""
    from flows.store import catalog

    def make(
        source_type: str,
        source_config: dict[str, Any],
        destination_type: str,
        destination_config: dict[str, Any],
        source_override: dict[str, Any] | None = None,
        destination_override: dict[str, Any] | None = None,
        name: str = "test connector",
    ) -> int:
        source_id = catalog.define_source(f"{name} source", source_type, source_config)
        destination_id = catalog.define_destination(f"{name} destination", destination_type, destination_config)
        return catalog.create_connector(name, source_id, destination_id, source_override, destination_override)

    return make


@pytest.fixture
def warehouse(config_store: str) -> dict[str, Any]:
    """Destination config pointing at the session database (the warehouse the tests load into)."""
    return {"connection_string": config_store}


@pytest.fixture(scope="session")
def reader(config_store: str) -> Iterator[dict[str, Any]]:
    """Source config of a login that can only read (pg_read_all_data), as the README recommends."""
    from psycopg.conninfo import make_conninfo

    role = f"cai_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(config_store, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pass-7'")
        conn.execute(f"GRANT pg_read_all_data TO {role}")
    try:
        yield {"connection_string": make_conninfo(config_store, user=role, password="reader-pass-7")}
    finally:
        with psycopg.connect(config_store, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def source_schema(config_store: str) -> Iterator[str]:
    """A schema holding `visits` (awkward values of every common type) and a sequence."""
    schema = f"src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(config_store) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE SEQUENCE {schema}.ticket")
        conn.execute(
            f"CREATE TABLE {schema}.visits (id bigint PRIMARY KEY, name text, note text, amount numeric(14,3), "
            "seen_at timestamptz, active boolean, born date, payload jsonb, ref uuid, stay interval)"
        )
        for i, (id_, name, note, amount, seen_at, flag) in enumerate(AWKWARD_ROWS):
            conn.execute(
                f"INSERT INTO {schema}.visits VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (int(id_), name or None, note or None, Decimal(amount) if amount else None, seen_at or None,
                 {"true": True, "false": False}.get(flag), None if i == 3 else f"19{50 + i}-0{i + 1}-1{i}",
                 None if i == 3 else json.dumps({"visit": i, "tags": ["a,b", 'q"uote']}),
                 None if i == 3 else uuid.UUID(int=i + 1), None if i == 3 else f"{i} days 02:00:00"),
            )
    try:
        yield schema
    finally:
        with psycopg.connect(config_store) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
