"""Column typing at the edges its shortcuts take: usual boolean spellings, integers near bigint's limit."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dlt_sources.filesystem.inference import widen


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
