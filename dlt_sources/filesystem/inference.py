"""Column types of CSV text, inferred so that loading never changes a value.

Every value of a column is looked at (batch by batch, vectorised with pyarrow), not a sample: one
MRN with a leading zero deep in a file keeps the whole column text. A column gets the narrowest
PostgreSQL type that takes each of its values back exactly:

- `t`/`f`/`true`/`false` -> boolean; integers -> bigint, or numeric beyond bigint's range;
- decimals (and exponents, `NaN`, `Infinity`) -> unconstrained numeric, never a float;
- a number written with a leading zero (`08123`, `007.5`) -> text;
- ISO dates -> date; date-times without an offset -> timestamp, with one (`+05:30`, `+00`, `Z`) ->
  timestamptz (PostgreSQL keeps microseconds and rounds further digits itself); times -> time / timetz;
- anything else, a quoted empty string among numbers, or a column that is empty throughout -> text.
A column widens along its chain as later batches need (bigint -> numeric -> text, date -> timestamp
-> timestamptz -> text); any other mix is text.

The patterns are the rule. Plain values (ASCII digits, ISO dates and times Arrow's own parser reads)
take cheaper shortcuts that say yes only where the pattern would; anything else goes to the pattern.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from cai_common.pg_types import CHAINS

TEXT = "text"

_DATE = r"[0-9]{4,}-[0-9]{2}-[0-9]{2}"
_TIME = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
_OFFSET = r"( ?([+-][0-9]{2}(:?[0-9]{2}){0,2}|Z|UTC))"
_INFINITY = r"|[+-]?(?i:infinity)"
PATTERNS: dict[str, str] = {
    "boolean": r"^(?i:t|f|true|false)$",
    "bigint": r"^[+-]?(0|[1-9][0-9]*)$",
    "numeric": r"^([+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|NaN|[+-]?Infinity)$",
    "date": rf"^({_DATE}( BC)?{_INFINITY})$",
    "timestamp without time zone": rf"^({_DATE}([T ]{_TIME})?( BC)?{_INFINITY})$",
    "timestamp with time zone": rf"^({_DATE}([T ]{_TIME}{_OFFSET}?)?( BC)?{_INFINITY})$",
    "time without time zone": rf"^{_TIME}$",
    "time with time zone": rf"^{_TIME}{_OFFSET}$",
}
# A number whose integer part starts with a zero and has more digits: an identifier, not a number.
_LEADING_ZERO = r"^[+-]?0[0-9]"

_ORDER = [t for chain in CHAINS for t in chain]
_WIDER = {t: chain[chain.index(t):] for chain in CHAINS for t in chain}


# The spellings of booleans in real exports (psql's `t`/`f`, JSON's, spreadsheets'): a column of only
# these is boolean without running the pattern, which decides every other case.
_USUAL_BOOLEANS = pa.array(["t", "f", "true", "false", "T", "F", "TRUE", "FALSE", "True", "False"])
# An integer of at most 18 characters (sign included) is below 10**18 < 2**63: bigint holds it. Only
# a longer one needs converting to find out.
_SURELY_BIGINT = 18


def _plain_number(values: pa.Array, pg_type: str) -> bool:
    """Whether every value is plainly a ``pg_type``: ASCII digits (a numeric may have one `.`), no
    leading zero, a bigint short enough to fit.

    The common case, decided by a few cheap kernels instead of a pattern (measured on psql's export of
    2M rows: an integer column 0.018 s against 0.098 s). True only where the pattern holds too;
    anything else (a sign, an exponent, `NaN`, a leading zero, a long integer) is left to the pattern,
    which decides every case.
    """
    if pg_type == "bigint":
        if pc.max(pc.binary_length(values)).as_py() > _SURELY_BIGINT:
            return False
    elif pg_type != "numeric":
        return False
    if pc.any(pc.starts_with(values, "-")).as_py():  # stripping signs costs what the pattern does
        return False
    digits = pc.replace_substring(values, ".", "", max_replacements=1) if pg_type == "numeric" else values
    if not pc.all(pc.ascii_is_decimal(digits)).as_py():
        return False
    zero_led = pc.starts_with(values, "0")
    if not pc.any(zero_led).as_py():
        return True
    # `0` and `0.5` are numbers; `08123` (a digit after the zero) is an identifier
    after_zero = pc.utf8_slice_codeunits(pc.filter(values, zero_led), 1, 2)
    return not pc.any(pc.ascii_is_decimal(after_zero)).as_py()


# Arrow's ISO 8601 parser takes a subset of what the patterns take (4-digit years, fixed-width fields,
# `Z`/`+hh`/`+hh:mm`/`+hhmm` offsets, a tz-aware type only with an offset and a naive one only
# without), save a time of hours alone (`2024-01-01 10`), which a `:` after the hour rules out.
_ISO_CASTS = {"date": pa.date32(), "timestamp without time zone": pa.timestamp("us"),
              "timestamp with time zone": pa.timestamp("us", "UTC")}
_MINUTES_AT = 13
"""Where the `:` between hours and minutes sits in `YYYY-MM-DD hh:mm`."""


def _plain_iso(values: pa.Array, pg_type: str) -> bool:
    """Whether every value is a plain ISO 8601 ``pg_type`` that Arrow's own parser reads.

    A cast in C instead of a pattern (2M psql timestamps: 0.06 s against 0.25 s). True only where
    the pattern holds too; anything else (`BC`, `infinity`, ` UTC`, a 5-digit year, a bare date in a
    timestamp column) is left to the pattern.
    """
    arrow_type = _ISO_CASTS.get(pg_type)
    if arrow_type is None:
        return False
    if pg_type != "date" and not pc.all(pc.equal(pc.utf8_slice_codeunits(values, _MINUTES_AT, _MINUTES_AT + 1),
                                                 ":")).as_py():
        return False
    try:
        pc.cast(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _fits(values: pa.Array, pg_type: str) -> bool:
    return _surely_fits(values, pg_type) or _matches(values, pg_type)


def _surely_fits(values: pa.Array, pg_type: str) -> bool:
    """The shortcuts: each is True only where `_matches` is True too, and costs a fraction of it."""
    if pg_type == "boolean":
        return bool(pc.all(pc.is_in(values, value_set=_USUAL_BOOLEANS)).as_py())
    return _plain_number(values, pg_type) or _plain_iso(values, pg_type)


def _matches(values: pa.Array, pg_type: str) -> bool:
    """The rule: every value matches the pattern (a bigint also converts, a numeric has no leading zero)."""
    if not pc.all(pc.match_substring_regex(values, PATTERNS[pg_type])).as_py():
        return False
    if pg_type == "bigint" and pc.max(pc.binary_length(values)).as_py() > _SURELY_BIGINT:
        try:
            pc.cast(pc.utf8_ltrim(values, "+"), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # beyond bigint: numeric takes it
            return False
    # a leading zero means an identifier: text keeps it
    return not (pg_type == "numeric" and _any_leading_zero(values))


def _any_leading_zero(values: pa.Array) -> bool:
    """Whether a value matches `_LEADING_ZERO`; the pattern runs only on values starting `0`, `-0` or `+0`."""
    near = pc.or_(pc.starts_with(values, "0"), pc.or_(pc.starts_with(values, "-0"), pc.starts_with(values, "+0")))
    if not pc.any(near).as_py():
        return False
    return bool(pc.any(pc.match_substring_regex(pc.filter(values, near), _LEADING_ZERO)).as_py())


def widen(current: str | None, values: pa.Array) -> str | None:
    """The narrowest type at least as wide as ``current`` that holds every non-null value exactly.

    Args:
        current: the type the column has so far, None when no value was seen yet.
        values: the column's next values, as strings (NULLs ignored).

    Returns:
        The type; None while the column has had no value (a block of NULLs decides nothing).
    """
    if current == TEXT:
        return TEXT
    present = values.drop_null() if values.null_count else values  # dropping copies every value
    if len(present) == 0:
        return current
    for candidate in _WIDER[current] if current else _ORDER:
        if _fits(present, candidate):
            return candidate
    return TEXT


class ColumnTypes:
    """Types of one file's columns, widened batch by batch; pinned columns keep the user's type."""

    def __init__(self, names: list[str], pinned: dict[str, str] | None = None) -> None:
        self.names = names
        self.pinned = {n: t for n, t in (pinned or {}).items() if n in names}
        self._types: dict[str, str | None] = {n: None for n in names if n not in self.pinned}

    def update(self, batch: pa.RecordBatch) -> None:
        """Widen the type of each column in ``batch`` to hold its values."""
        for name in batch.schema.names:
            current = self._types.get(name, TEXT)
            if current != TEXT:
                self._types[name] = widen(current, batch.column(name))

    def unseen(self) -> list[str]:
        """Columns (not pinned) that had no value yet."""
        return [n for n, t in self._types.items() if t is None]

    def undecided(self) -> list[str]:
        """Columns that may still widen: not pinned, not text yet (text is as wide as it gets)."""
        return [n for n, t in self._types.items() if t != TEXT]

    def result(self) -> dict[str, str]:
        """Column -> PostgreSQL type, in the file's order; columns empty throughout are text."""
        return {n: self.pinned[n] if n in self.pinned else self._types[n] or TEXT for n in self.names}


__all__ = ["PATTERNS", "TEXT", "ColumnTypes", "widen"]
