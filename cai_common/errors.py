"""Errors that name the connector, the field and what was expected; terminal ones are never retried."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from dlt.common.exceptions import TerminalValueError


class CaiError(Exception):
    """Base of every error this product raises on purpose: its message is written for a person.

    `explain` shows the first of these in an exception chain, and `is_transient` asks it, by type,
    whether retrying can help. Each subclass keeps what it is about (the connector, field, file,
    host or value) as attributes.
    """

    transient: bool = False
    """True for errors a retry may cure (a connection dropped); config and data errors are terminal."""


class ConnectorError(CaiError):
    """Base class of every error raised about one connector."""

    def __init__(self, connector_id: int | None, message: str) -> None:
        self.connector_id = connector_id
        prefix = f"connector {connector_id}: " if connector_id is not None else ""
        super().__init__(prefix + message)


class ConnectorNotFound(ConnectorError, ValueError):
    """No row in `cai_connectors` has this id."""

    def __init__(self, connector_id: int) -> None:
        self.connector_id = connector_id
        Exception.__init__(self, f"connector {connector_id} not found")


class ConnectorConfigError(ConnectorError, TerminalValueError):
    """A source or destination config that cannot work; retrying will not help.

    Attributes:
        connector_id: the connector whose config is wrong.
        side: ``"source"`` or ``"destination"``.
        field: dotted path of the offending key, or None for the config as a whole.
        problem: what was expected, in words.
    """

    def __init__(self, connector_id: int | None, side: str, field: str | None, problem: str) -> None:
        self.side = side
        self.field = field
        self.problem = problem
        where = f"{side} `{field}`" if field else f"{side} config"
        super().__init__(connector_id, f"{where} {problem}")


class UnknownTypeError(ConnectorConfigError):
    """A source or destination type code that no implementation is registered for."""

    def __init__(self, connector_id: int | None, side: str, code: str | None, known: Iterable[str]) -> None:
        self.code = code
        self.known = sorted(known)
        super().__init__(
            connector_id,
            side,
            "type",
            f"`{code}` is not a known {side} type; known types: {', '.join(self.known)}",
        )


class ReconciliationError(CaiError, TerminalValueError):
    """The destination holds a different number of rows than were read from the source."""

    def __init__(self, rows_read: int, rows_written: int, metrics: dict[str, Any] | None = None) -> None:
        self.rows_read = rows_read
        self.rows_written = rows_written
        self.metrics = metrics or {}
        super().__init__(f"rows read from the source ({rows_read}) and rows written to the destination "
                         f"({rows_written}) disagree")


class DiskFull(CaiError, OSError):
    """The worker's disk filled up while writing a file of the run (staging, an export)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(errno.ENOSPC, f"no space left on device writing `{path}`: free space there, or point "
                                       "CAI_PIPELINES_DIR at a larger disk")

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def disk_full_named(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn ENOSPC while writing ``path`` into DiskFull naming it (and remove the partial file)."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC or isinstance(exc, DiskFull):
            raise
        with suppress(OSError):
            os.unlink(path)
        raise DiskFull(str(path)) from exc


class UnsupportedPathError(ConnectorError, TerminalValueError):
    """A valid source and a valid destination that no data path joins (yet)."""

    def __init__(
        self, connector_id: int | None, source_type: str, destination_type: str, supported: Iterable[str]
    ) -> None:
        self.source_type = source_type
        self.destination_type = destination_type
        self.supported = sorted(supported)
        super().__init__(
            connector_id,
            f"no data path from source `{source_type}` to destination `{destination_type}`; "
            f"supported: {', '.join(self.supported)}",
        )


class ConnectorRunFailed(ConnectorError):
    """Raised by the flow after the run record is closed as `failed`, so Prefect marks the run Failed.

    Attributes:
        result: the flow's result dict (status, rows_ingested, log_summary, run_id, metrics).
    """

    def __init__(self, connector_id: int, result: dict[str, Any]) -> None:
        self.result = result
        super().__init__(connector_id, f"run {result.get('run_id')} failed: {result.get('log_summary')}")


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (connection resets, timeouts); config and data errors are terminal."""
    import sys

    import psycopg2
    from dlt.common.exceptions import TerminalException, TransientException

    from cai_common.tls import tls_failure_in

    if isinstance(exc, CaiError):
        return exc.transient
    if isinstance(exc, TerminalException) or tls_failure_in(exc):  # a certificate that fails fails again
        return False
    # psycopg 3 (the query paths) is only checked where it was loaded: importing it costs 9-10 MB.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, TransientException | psycopg2.OperationalError | ConnectionError | TimeoutError)


def explain(exc: BaseException) -> str:
    """The most telling message in an exception chain (dlt wraps the real cause two levels deep)."""
    from cai_common.tls import tls_problem

    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        context = None if current.__suppress_context__ else current.__context__  # `raise ... from None`
        current = getattr(current, "exception", None) or current.__cause__ or context
    ours = [e for e in seen if isinstance(e, CaiError)]
    # A generator's StopIteration can end a chain: it explains nothing.
    telling = [e for e in seen if not isinstance(e, StopIteration | GeneratorExit)] or seen
    root = ours[0] if ours else telling[-1]
    step = getattr(exc, "step", None)
    message = str(root).strip() or type(root).__name__
    if not ours:
        message = f"{type(root).__name__}: {message}"
        tls = tls_problem(message)
        if tls:
            message += f" (TLS: {tls[1]}; check `{tls[0]}`)"
    return f"{step} step failed: {message}" if step else message
