"""Registries keyed by type code, with the platform's aliases; unknown codes fail listing the known ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cai_common.configuration import BaseConfig
from cai_common.errors import UnknownTypeError


@dataclass(frozen=True)
class TypeRegistry:
    """Type code -> config model for one side (``source`` or ``destination``).

    Attributes:
        side: named in errors.
        configs: canonical code -> typed config model.
        aliases: other lookup codes the platform stores for the same type.
    """

    side: str
    configs: Mapping[str, type[BaseConfig]]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def canonical(self, code: str | None, connector_id: int | None = None) -> str:
        """The canonical code for a stored lookup code, or UnknownTypeError listing the known codes."""
        lowered = (code or "").strip().lower()
        key = self.aliases.get(lowered, lowered)
        if key not in self.configs:
            raise UnknownTypeError(connector_id, self.side, code, [*self.configs, *self.aliases])
        return key

    def parse(self, code: str | None, raw: Any, connector_id: int | None = None) -> BaseConfig:
        """Validate a stored config against the model of its type."""
        return self.configs[self.canonical(code, connector_id)].parse(raw, connector_id=connector_id, side=self.side)
