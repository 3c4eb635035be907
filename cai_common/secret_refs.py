"""Secrets by reference: any string in a config may be `{"secret": "env:NAME"}` or `{"secret": "prefect:BLOCK"}`.

The stored config keeps the reference; the value is looked up when the run parses its config, in
the worker's process, and never written back: not to the config dict Prefect passes between tasks,
not to the run record. Every resolved value is masked like a plaintext secret field, wherever it
was used (a `username` by reference is masked too). `env:` reads the worker's environment (where
Kubernetes Secrets arrive); `prefect:` loads a Prefect Secret block from the Prefect API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cai_common.errors import ConnectorConfigError

KEY = "secret"
SCHEMES = ("env", "prefect")


def is_reference(value: Any) -> bool:
    """Whether ``value`` is a secret reference: an object whose only key is `secret`."""
    return isinstance(value, dict) and set(value) == {KEY}


@dataclass
class Resolved:
    """A config with its references replaced, and the values they resolved to (for masking)."""

    config: dict[str, Any]
    secrets: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    """Dotted paths of the fields that were references."""


class SecretReferenceError(ConnectorConfigError):
    """A reference that cannot be resolved; names the field and the reference, never a value."""


def resolve(config: dict[str, Any], *, connector_id: int | None, side: str) -> Resolved:
    """Replace every secret reference in ``config`` with its value.

    Raises:
        ConnectorConfigError: a malformed or unresolvable reference (naming the field and the reference).
    """
    resolved = Resolved(config={})

    def walk(value: Any, path: str) -> Any:
        if is_reference(value):
            text = _lookup(value[KEY], connector_id=connector_id, side=side, path=path)
            resolved.secrets.append(text)
            resolved.references.append(path)
            return text
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    resolved.config = walk(config, "")
    return resolved


def _lookup(reference: Any, *, connector_id: int | None, side: str, path: str) -> str:
    scheme, _, name = reference.partition(":") if isinstance(reference, str) else ("", "", "")
    if scheme not in SCHEMES or not name:
        raise SecretReferenceError(connector_id, side, path, 'must be a secret reference like {"secret": "env:NAME"} '
                                                             'or {"secret": "prefect:BLOCK"}')
    if scheme == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretReferenceError(connector_id, side, path,
                                  f"refers to `{reference}`, which is not set in this worker's environment")
        return value
    return _prefect_secret(name, reference, connector_id=connector_id, side=side, path=path)


def _prefect_secret(name: str, reference: str, *, connector_id: int | None, side: str, path: str) -> str:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SecretReferenceError(connector_id, side, path, f"refers to `{reference}`, a Prefect Secret block, but no "
                                                        "Prefect API is configured here (PREFECT_API_URL)")
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:
        raise SecretReferenceError(connector_id, side, path,
                              f"refers to `{reference}`, but the Prefect API has no Secret block named `{name}`"
                              ) from None
    except Exception as exc:
        raise SecretReferenceError(connector_id, side, path, f"refers to `{reference}`, which could not be loaded: "
                                                        f"{type(exc).__name__}") from None
    value = block.get()
    return value if isinstance(value, str) else str(value)


def plaintext_secrets(raw: dict[str, Any], secret_fields: list[str]) -> list[str]:
    """Which of ``secret_fields`` hold a plaintext value in ``raw`` (a stored config, references unresolved).

    A `connection_string` counts only when it carries a password (`user:password@`).
    """
    found: list[str] = []
    for name in secret_fields:
        value = raw.get(name)
        if isinstance(value, dict) and not is_reference(value):  # secret-bearing mappings (REST headers)
            found.extend(f"{name}.{k}" for k, v in value.items() if isinstance(v, str) and len(v) >= 6)
        elif isinstance(value, str) and value:
            if name == "connection_string" and not _has_password(value):
                continue
            found.append(name)
    return found


def _has_password(url: str) -> bool:
    from psycopg2.extensions import parse_dsn

    try:
        return bool(parse_dsn(url).get("password"))
    except Exception:
        return True  # unreadable: assume the worst


__all__ = ["KEY", "Resolved", "is_reference", "plaintext_secrets", "resolve"]
