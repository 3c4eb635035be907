"""Kinds of sources and destinations, and the registries that map the platform's lookup codes to them.

A kind is declared once, in its own folder (`dlt_sources/<kind>/` or `dlt_destinations/<kind>/`):
its code and aliases, its typed config model, what it can do, how it is probed by `cai doctor`,
and the objects a data path needs from it (a filesystem to read, a file target to write, an upload
target). Data paths choose by capability, never by name:

- a source **yields** `query` rows (read through a SQL query) or `files` (an fsspec filesystem);
- a destination **accepts** `rows` (tables), `files` (an fsspec file target: exports and transfers)
  or `uploads` (files sent one by one to an endpoint: transfers only).

One line registers a kind: `SOURCES.register(KIND)` or `DESTINATIONS.register(KIND)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from cai_common.configuration import BaseConfig
from cai_common.errors import UnknownTypeError

Yields = Literal["query", "files"]
Accepts = Literal["rows", "files", "uploads"]


@dataclass(frozen=True)
class Probe:
    """A health check of one side of a connector: what is checked (secrets masked later) and how.

    ``check`` returns a one-line answer; a `Caution` answer passes with a warning.
    """

    target: str
    check: Callable[[], str]


class Caution(str):
    """A probe's answer that passes with a warning (e.g. a source login that can write)."""


@dataclass(frozen=True)
class SourceKind:
    """A source kind.

    Attributes:
        code: canonical lookup code (`ad_lookup_codes.lookup_code`, type `source_type`).
        config: the typed config model its stored JSON validates against.
        yields: ``query`` (rows of a read-only SQL query) or ``files`` (an fsspec filesystem).
        description: the lookup code's description, seeded by `cai init-db`.
        aliases: other lookup codes the platform stores for it.
        probe: the `cai doctor` check of a validated config.
        url_schemes: for ``files`` kinds, the URL schemes of locations it reads (``""`` for plain paths).
        from_url: ``(base URL or path, options) -> raw config`` for such a location (`cai load-csv`).
    """

    code: str
    config: type[BaseConfig]
    yields: Yields
    description: str
    probe: Callable[[Any], Probe]
    aliases: tuple[str, ...] = ()
    url_schemes: tuple[str, ...] = ()
    from_url: Callable[[str], dict[str, Any]] | None = None


@dataclass(frozen=True)
class DestinationKind:
    """A destination kind.

    Attributes:
        code, config, description, aliases, probe: as for `SourceKind`.
        accepts: ``rows``, ``files`` and/or ``uploads``.
        file_target: for ``files``: the `FileTarget` (an fsspec filesystem and how to write it).
        upload_target: for ``uploads``: an object with ``location()``, ``url(relative_path)`` and
            ``send(src, file_url, relative_path)`` (see `dlt_destinations.files.TransferTarget`).
    """

    code: str
    config: type[BaseConfig]
    accepts: frozenset[Accepts]
    description: str
    probe: Callable[[Any], Probe]
    aliases: tuple[str, ...] = ()
    file_target: Callable[[Any], Any] | None = None
    upload_target: Callable[[Any], Any] | None = None


KindT = TypeVar("KindT", bound=SourceKind | DestinationKind)


@dataclass
class KindRegistry(Generic[KindT]):
    """Lookup code (or alias) -> kind, for one side (``source`` or ``destination``)."""

    side: str
    kinds: dict[str, KindT] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def register(self, *new: KindT) -> None:
        """Add kinds; a code or alias already taken by another kind is a programming error."""
        for each in new:
            for code in (each.code, *each.aliases):
                taken = self.aliases.get(code) or (code if code in self.kinds else None)
                if taken is not None and taken != each.code:
                    raise ValueError(f"{self.side} code `{code}` is taken by `{taken}`")
            self.kinds[each.code] = each
            self.aliases.update({alias: each.code for alias in each.aliases})

    def unregister(self, code: str) -> None:
        """Remove a kind and its aliases (tests that register their own kind clean up with this)."""
        self.kinds.pop(code, None)
        self.aliases = {alias: target for alias, target in self.aliases.items() if target != code}

    def canonical(self, code: str | None, connector_id: int | None = None) -> str:
        """The canonical code for a stored lookup code, or UnknownTypeError listing the known codes."""
        lowered = (code or "").strip().lower()
        key = self.aliases.get(lowered, lowered)
        if key not in self.kinds:
            raise UnknownTypeError(connector_id, self.side, code, [*self.kinds, *self.aliases])
        return key

    def kind(self, code: str | None, connector_id: int | None = None) -> KindT:
        """The kind behind a stored lookup code (UnknownTypeError when none)."""
        return self.kinds[self.canonical(code, connector_id)]

    def parse(self, code: str | None, raw: Any, connector_id: int | None = None) -> BaseConfig:
        """Validate a stored config against the model of its kind."""
        return self.kind(code, connector_id).config.parse(raw, connector_id=connector_id, side=self.side)

    def for_scheme(self, scheme: str) -> KindT | None:
        """The kind reading locations with this URL scheme (sources only), or None."""
        return next((k for k in self.kinds.values() if scheme in getattr(k, "url_schemes", ())), None)

    def lookup_codes(self) -> Iterable[tuple[str, str]]:
        """(code, description) of every code and alias, for seeding `ad_lookup_codes`."""
        for kind in self.kinds.values():
            yield kind.code, kind.description
            for alias in kind.aliases:
                yield alias, f"{kind.description} (alias of {kind.code})"


SOURCES: KindRegistry[SourceKind] = KindRegistry("source")
"""Every source kind; `dlt_sources` registers the built-in ones."""

DESTINATIONS: KindRegistry[DestinationKind] = KindRegistry("destination")
"""Every destination kind; `dlt_destinations` registers the built-in ones."""

