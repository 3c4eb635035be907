"""TLS failures of PostgreSQL connections, named by the setting a person has to change.

libpq (under psycopg and dlt's psycopg2 alike) reports a refused certificate as an
`OperationalError` whose text is all there is to go on; these patterns turn that text into the
field (`sslrootcert`, `host`, `sslmode`...) and a reason. A TLS failure is terminal: retrying
a certificate that does not verify cannot help, and nothing ever retries it without TLS.
"""

from __future__ import annotations

import re

# (pattern in libpq's message, field to change, what it means)
_PROBLEMS: tuple[tuple[str, str, str], ...] = (
    (r"does not match host name", "host",
     "the server's certificate is not for this host name (verify-full checks it; use the name on the certificate)"),
    (r"root certificate file .* does not exist|could not read root certificate", "sslrootcert",
     "the CA certificate file to verify the server with is missing"),
    (r"certificate verify failed|self[- ]signed certificate|unable to get local issuer", "sslrootcert",
     "the server's certificate is not signed by the CA in `sslrootcert`"),
    (r"certificate has expired", "sslrootcert", "the server's certificate has expired"),
    (r"server does not support SSL", "sslmode", "the server does not offer TLS, and `sslmode` requires it"),
    (r"no encryption", "sslmode", "the server accepts only TLS connections: set `sslmode` (verify-full)"),
    (r"could not load private key|private key file", "sslkey", "the client key file could not be used"),
    (r"certificate required|could not load SSL certificate|certificate file", "sslcert",
     "the server wants a client certificate the connection did not present"),
    (r"SSL error: (?!.*unexpected eof)|tlsv1 alert", "sslmode", "the TLS handshake failed"),
)


def tls_problem(message: str) -> tuple[str, str] | None:
    """(field, reason) when ``message`` is a TLS failure of a PostgreSQL connection, else None."""
    if "connection" not in message and "SSL" not in message and "certificate" not in message:
        return None
    for pattern, field, reason in _PROBLEMS:
        if re.search(pattern, message, flags=re.IGNORECASE):
            return field, reason
    return None


def libpq_reason(message: str) -> str:
    """libpq's own words for the failure: the part after `failed:`, first line only."""
    line = message.strip().splitlines()[0] if message.strip() else message
    return line.rsplit("failed: ", 1)[-1].strip()


def tls_failure_in(exc: BaseException) -> str | None:
    """The message of the first TLS failure in ``exc``'s chain (causes, contexts, dlt's wrapped errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if tls_problem(str(current)):
            return str(current)
        current = getattr(current, "exception", None) or current.__cause__ or current.__context__
    return None


__all__ = ["libpq_reason", "tls_failure_in", "tls_problem"]
