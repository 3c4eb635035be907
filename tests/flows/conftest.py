"""Fixtures for flow tests: registering connectors in the session's config store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def make_connector(config_store: str) -> Callable[..., int]:
    """Register a defined source, a defined destination and a connector; return the connector id."""
    from flows import catalog

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
