"""Column typing at the edges its shortcuts take: usual boolean spellings, integers near bigint's limit."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dlt_sources.filesystem import inference
from dlt_sources.filesystem.inference import ColumnTypes, widen


@pytest.mark.parametrize(("values", "expected"), [
    (["999999999999999999", "-99999999999999999"], "bigint"),       # 18 characters: no conversion needed
    (["-999999999999999999", "1"], "bigint"),                       # 19 with the sign: converted, fits
    (["9223372036854775807", "-9223372036854775808"], "bigint"),    # bigint's own limits
    (["+9223372036854775807"], "bigint"),
    (["9223372036854775808"], "numeric"),                           # one past the limit
    (["-9223372036854775809", "5"], "numeric"),
    (["99999999999999999999999999"], "numeric"),
    (["018", "5"], "text"),                                          # a leading zero: an identifier
])
def test_integers_get_bigint_only_where_bigint_holds_them(values: list[str], expected: str) -> None:
    assert widen(None, pa.array(values)) == expected
    # the same values in a column already known to be bigint, as a later block of the file
    assert widen("bigint", pa.chunked_array([pa.array(["1"]), pa.array(values)])) == expected


@pytest.mark.parametrize(("values", "expected"), [
    (["t", "f", None, "t"], "boolean"),                # psql's
    (["true", "False", "TRUE"], "boolean"),
    (["tRuE", "f"], "boolean"),                        # unusual, still PostgreSQL's boolean
    (["t", "yes"], "text"),                            # not a boolean PostgreSQL reads the same
    (["t", "1"], "text"),
    (["t", ""], "text"),                               # a quoted empty string is a value, not NULL
])
def test_booleans(values: list[str | None], expected: str) -> None:
    assert widen(None, pa.array(values, pa.string())) == expected


_SEEDS = ["0", "7", "42", "-42", "123456789012345678", "-12345678901234567", "8.419", "-8.419", "0.5", "-0.5",
          ".5", "-.5", "5.", "t", "false",
          "2024-01-01", "2024-01-01 00:00:13.000123+00", "2024-01-01T10:00:00Z", "2024-01-01 10:00",
          "2024-01-01 10:00:00+05:30", "1999-12-31 23:59:59.5-0800", "2024-01-01 10:00:00"]
# What real files put where a digit, a separator or a sign is expected: other digits (Arabic-Indic,
# full-width), the other separators, signs, exponents, spaces, letters of zones and eras.
_ALPHABET = "0159-+:.,/ TtZzeEBCU\u0663\uff11"
_TYPES = ["boolean", "bigint", "numeric", "date", "timestamp without time zone", "timestamp with time zone",
          "time without time zone", "time with time zone"]


def _one_edit_away(seed: str) -> set[str]:
    """Every string one substitution, insertion or deletion away from ``seed``."""
    found = set()
    for at in range(len(seed) + 1):
        for char in _ALPHABET:
            found.add(seed[:at] + char + seed[at:])
            if at < len(seed):
                found.add(seed[:at] + char + seed[at + 1:])
        if at < len(seed):
            found.add(seed[:at] + seed[at + 1:])
    return found


def test_the_shortcuts_never_accept_what_the_rule_refuses() -> None:
    # Each value alone: a shortcut that took one value the patterns refuse would type a column
    # differently from the rule, and the load could change that value.
    values = sorted({v for seed in _SEEDS for v in _one_edit_away(seed)} | set(_SEEDS))
    taken = 0
    for pg_type in _TYPES:
        for value in values:
            one = pa.array([value])
            if inference._surely_fits(one, pg_type):
                taken += 1
                assert inference._matches(one, pg_type), f"{value!r} taken as {pg_type} by a shortcut only"
    assert taken > 500  # the shortcuts were exercised, not only refused


@pytest.mark.parametrize(("values", "pg_type"), [
    (["1", "20", "0", "123456789012345678"], "bigint"),
    (["8.419", "0.5", ".5", "5.", "12"], "numeric"),
    (["2024-01-01", "1999-12-31"], "date"),
    (["2024-01-01 00:00:13.000123+00", "2024-01-01T10:00:00Z", "2024-01-01 10:00-05:30"], "timestamp with time zone"),
    (["2024-01-01 00:00:13.000123", "2024-01-01T10:00"], "timestamp without time zone"),
])
def test_plain_values_as_psql_writes_them_take_a_shortcut(values: list[str], pg_type: str) -> None:
    assert inference._surely_fits(pa.array(values), pg_type)
    assert inference._matches(pa.array(values), pg_type)


@pytest.mark.parametrize(("values", "expected"), [
    (["012", "5"], "text"), (["0.5", "00.5"], "text"), (["5", "+5"], "bigint"), (["1.5", "1e5"], "numeric"),
    (["-7", "-0", "7"], "bigint"), (["-3.25", "-0.5", "-.5", "+0.5"], "numeric"), (["-5", "-012"], "text"),
    (["-5", "--5"], "text"), (["-5", "-"], "text"), (["-1.5", "-00.5"], "text"),
    (["2024-01-01 10:00:00+00", "2024-01-01 10:00:00 UTC"], "timestamp with time zone"),
    (["2024-01-01 10:00:00", "2024-01-01"], "timestamp without time zone"),
    (["2024-01-01 10", "2024-01-01 10:00"], "text"),
    (["2024-01-01 10:00:00+00", "infinity"], "timestamp with time zone"),
])
def test_a_value_no_shortcut_takes_is_typed_by_the_rule(values: list[str], expected: str) -> None:
    assert widen(None, pa.array(values)) == expected


def test_a_column_empty_in_its_first_blocks_is_typed_by_its_later_values() -> None:
    """A discharge date empty for the first blocks of an export is a date, not text; empty throughout, text."""
    types = ColumnTypes(["discharged", "note"])
    types.update(pa.record_batch([pa.array([None, None], pa.string())] * 2, names=["discharged", "note"]))
    assert types.unseen() == ["discharged", "note"]
    types.update(pa.record_batch([pa.array(["2024-07-20", None]), pa.array([None, None], pa.string())],
                                 names=["discharged", "note"]))
    assert types.result() == {"discharged": "date", "note": "text"}
    assert types.unseen() == ["note"]
