"""Secret masking: every text that leaves the process (logs, run records, artifacts) goes through here."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# user:password@ in any URL-like DSN, even one we were never told about.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")


def mask_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with known secret values and URL passwords replaced by ``***``.

    Args:
        text: any message about to be logged or stored.
        secrets: the secret values in play (passwords, keys, tokens); short ones are masked too.
    """
    # Longest first so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
