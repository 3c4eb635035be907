"""Reading a connector's merged, validated config from the store (spec 4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cai_common import BaseConfig, ConnectorConfigError, ConnectorNotFound
from cai_common.configuration import json_kind
from cai_common.secret_refs import Resolved, resolve
from dlt_destinations import DESTINATIONS
from dlt_sources import SOURCES
from flows.store.config_merge import deep_merge
from flows.store.config_store import connect

# The spec's join (4.1), unchanged: the backend relies on these tables meaning exactly this.
CONNECTOR_QUERY = """
SELECT
    c.id, c.name,
    c.source_config_override, c.destination_config_override,
    ds.config as source_base_config,
    dd.config as dest_base_config,
    alc_s.lookup_code as source_type,
    alc_d.lookup_code as dest_type
FROM cai_connectors c
LEFT JOIN cai_defined_sources ds ON c.defined_source_id = ds.id
LEFT JOIN cai_defined_destinations dd ON c.defined_destination_id = dd.id
LEFT JOIN ad_lookup_codes alc_s ON ds.source_type_lookup_code_id = alc_s.id
LEFT JOIN ad_lookup_codes alc_d ON dd.destination_type_lookup_code_id = alc_d.id
WHERE c.id = %s
"""


@dataclass(frozen=True)
class ConnectorConfig:
    """A connector's config, validated: canonical type codes and typed source/destination models."""

    connector_id: int
    connector_name: str
    source_type: str
    source: BaseConfig
    destination_type: str
    destination: BaseConfig
    referenced_secrets: tuple[str, ...] = field(default=(), repr=False)
    """Values that secret references (`{"secret": "env:NAME"}`) resolved to: masked like secret fields."""

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ConnectorConfig:
        """Validate the spec's config dict (as `read_connector_config` returns it).

        Raises:
            ConnectorConfigError: naming the connector, the field and what was expected.
        """
        connector_id = config["connector_id"]
        for side, key in (("source", "source_type"), ("destination", "destination_type")):
            if not config.get(key):
                raise ConnectorConfigError(
                    connector_id, side, f"defined_{side}_id", f"must point at a defined {side} with a type"
                )
        source_type = SOURCES.canonical(config["source_type"], connector_id)
        destination_type = DESTINATIONS.canonical(config["destination_type"], connector_id)
        source = _resolved(config["source_config"], connector_id, "source")
        destination = _resolved(config["destination_config"], connector_id, "destination")
        return cls(
            connector_id=connector_id,
            connector_name=config["connector_name"],
            source_type=source_type,
            source=SOURCES.parse(config["source_type"], source.config, connector_id),
            destination_type=destination_type,
            destination=DESTINATIONS.parse(config["destination_type"], destination.config, connector_id),
            referenced_secrets=tuple(source.secrets + destination.secrets),
        )

    def secret_values(self) -> list[str]:
        """Every secret in this connector's configs, for masking (referenced values included)."""
        return self.source.secret_values() + self.destination.secret_values() + [
            value for value in self.referenced_secrets if len(value) >= 4]

    def warnings(self) -> list[str]:
        """Keys in the stored configs that nothing reads (likely typos)."""
        return [
            f"{side} config key `{key}` is not used by `{code}`"
            for side, code, model in (
                ("source", self.source_type, self.source),
                ("destination", self.destination_type, self.destination),
            )
            for key in model.unknown_keys()
        ]


def _resolved(raw: Any, connector_id: int, side: str) -> Resolved:
    """The config with its secret references resolved (a non-object is left for the model to refuse)."""
    if not isinstance(raw, dict):
        return Resolved(config=raw)
    return resolve(raw, connector_id=connector_id, side=side)


def read_connector_config(connector_id: int, url: str | None = None) -> dict[str, Any]:
    """Read, merge and validate one connector's config (spec 4.1).

    Returns:
        ``{connector_id, connector_name, source_type, source_config, destination_type,
        destination_config}`` with each override deep-merged onto its base config.

    Raises:
        ValueError: ``connector N not found`` (ConnectorNotFound).
        ConnectorConfigError: a config that does not validate against its type's model.
    """
    with connect(url) as conn:
        row = conn.execute(CONNECTOR_QUERY, (connector_id,)).fetchone()
    if row is None:
        raise ConnectorNotFound(connector_id)
    for side, base, override in (("source", "source_base_config", "source_config_override"),
                                 ("destination", "dest_base_config", "destination_config_override")):
        # Never quoted: a config stored as a string or an array may hold a password.
        if row[base] is not None and not isinstance(row[base], dict):
            problem = f"(`config` of the defined {side}) must be a JSON object, got {json_kind(row[base])}"
            raise ConnectorConfigError(connector_id, side, None, problem)
        if row[override] is not None and not isinstance(row[override], dict):
            raise ConnectorConfigError(connector_id, side, override,
                                       f"must be a JSON object or null, got {json_kind(row[override])}")
    config = {
        "connector_id": row["id"],
        "connector_name": row["name"],
        "source_type": row["source_type"],
        "source_config": deep_merge(row["source_base_config"], row["source_config_override"]),
        "destination_type": row["dest_type"],
        "destination_config": deep_merge(row["dest_base_config"], row["destination_config_override"]),
    }
    ConnectorConfig.from_dict(config)  # validate at the edge: a bad config fails here, naming the field
    return config
