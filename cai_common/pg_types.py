"""PostgreSQL column types: validating a user's pinned type, naming a type one way, and its dlt column.

A column that must land with an exact PostgreSQL type carries it in the dlt column hint
`x-postgres-type` (the postgres destination creates the column with it); its dlt `data_type` is the
nearest dlt type, so `dlt pipeline ... schema` still reads sensibly.
"""

from __future__ import annotations

import re
from typing import Any

PG_TYPE_HINT = "x-postgres-type"
"""dlt column hint holding the column's exact PostgreSQL type."""

# Spellings of one type -> the name PostgreSQL's format_type() prints.
_ALIASES = {
    "int2": "smallint", "int": "integer", "int4": "integer", "int8": "bigint", "serial": "integer",
    "bigserial": "bigint", "decimal": "numeric", "float4": "real", "float8": "double precision",
    "float": "double precision", "bool": "boolean", "varchar": "character varying", "char": "character",
    "bpchar": "character", "timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
    "timetz": "time with time zone", "time": "time without time zone", "varbit": "bit varying",
}
# Types a user may pin a CSV column to (canonical names); the pin goes into DDL, so it is checked here.
PINNABLE = frozenset({
    "text", "character varying", "character", "smallint", "integer", "bigint", "numeric", "real",
    "double precision", "boolean", "date", "time without time zone", "time with time zone",
    "timestamp without time zone", "timestamp with time zone", "interval", "uuid", "json", "jsonb", "bytea",
    "inet", "cidr", "macaddr", "money", "bit", "bit varying", "xml", "citext",
})
_PIN = re.compile(
    r"^\s*(?P<base>[a-z][a-z0-9 ]*?)\s*(?:\(\s*(?P<args>\d+(?:\s*,\s*-?\d+)?)\s*\))?"
    r"(?P<tz>\s+with(?:out)?\s+time\s+zone)?\s*(?P<array>(?:\[\])*)\s*$"
)

# dlt data type nearest to each canonical PostgreSQL type (anything else is text).
_DLT_TYPES: dict[str, dict[str, Any]] = {
    "smallint": {"data_type": "bigint", "precision": 16},
    "integer": {"data_type": "bigint", "precision": 32},
    "bigint": {"data_type": "bigint"},
    "numeric": {"data_type": "decimal"},
    "real": {"data_type": "double"},
    "double precision": {"data_type": "double"},
    "boolean": {"data_type": "bool"},
    "date": {"data_type": "date"},
    "time without time zone": {"data_type": "time"},
    "timestamp without time zone": {"data_type": "timestamp", "timezone": False},
    "timestamp with time zone": {"data_type": "timestamp", "timezone": True},
    "json": {"data_type": "json"},
    "jsonb": {"data_type": "json"},
    "bytea": {"data_type": "binary"},
}


# Lossless widenings: a column of a type takes the text of every type before it in its chain unchanged.
CHAINS = [
    ["boolean"],
    ["bigint", "numeric"],
    ["date", "timestamp without time zone", "timestamp with time zone"],
    ["time without time zone"],
    ["time with time zone"],
]
_WIDER = {t: chain[chain.index(t):] for chain in CHAINS for t in chain}


class InvalidPgType(ValueError):
    """A type name that is not one of the PostgreSQL types a column may be pinned to."""


def canonical_type(pg_type: str) -> str:
    """One spelling per type, as PostgreSQL's format_type() prints it: `int4` -> `integer`, `numeric(10, 3)`
    -> `numeric(10,3)`, `timestamptz` -> `timestamp with time zone`.

    Raises:
        InvalidPgType: not a type a column may be pinned to.
    """
    found = _PIN.match(pg_type.lower())
    if not found:
        raise InvalidPgType(pg_type)
    base = " ".join(found["base"].split())
    tz = " ".join((found["tz"] or "").split())
    if tz and base in ("timestamp", "time"):
        base = f"{base} {tz}"
    elif tz:
        raise InvalidPgType(pg_type)
    base = _ALIASES.get(base, base)
    if base not in PINNABLE:
        raise InvalidPgType(pg_type)
    args = "(" + ",".join(a.strip() for a in found["args"].split(",")) + ")" if found["args"] else ""
    if args and " time zone" in base:  # timestamp(3) with time zone
        head, _, zone = base.partition(" with")
        return f"{head}{args} with{zone}" + found["array"]
    return base + args + found["array"]


def base_type(pg_type: str) -> str:
    """The type without modifiers: `numeric(10,3)` -> `numeric`, `timestamp(3) with time zone` -> `timestamp
    with time zone`, `integer[]` -> `integer[]`."""
    return re.sub(r"\(\s*[\d\s,-]*\)", "", pg_type).replace("  ", " ").strip()


def dlt_column(name: str, pg_type: str) -> dict[str, Any]:
    """A nullable dlt column that the postgres destination creates with exactly ``pg_type``."""
    nearest = {} if pg_type.endswith("[]") else _DLT_TYPES.get(base_type(pg_type), {})
    return {"name": name, "nullable": True, "data_type": "text", **nearest, PG_TYPE_HINT: pg_type}


def column_pg_type(column: dict[str, Any]) -> str:
    """The PostgreSQL type a dlt column has (or will have) in the destination."""
    if column.get(PG_TYPE_HINT):
        return str(column[PG_TYPE_HINT])
    data_type = column.get("data_type")
    if data_type == "timestamp":
        return "timestamp without time zone" if column.get("timezone") is False else "timestamp with time zone"
    if data_type == "bigint":
        precision = column.get("precision") or 64
        return "smallint" if precision <= 16 else "integer" if precision <= 32 else "bigint"
    return {"text": "text", "double": "double precision", "bool": "boolean", "decimal": "numeric",
            "date": "date", "time": "time without time zone", "json": "jsonb", "binary": "bytea",
            "wei": "numeric"}.get(str(data_type), "text")


def accepts(table_type: str, value_type: str) -> bool:
    """Whether COPY puts the text of every ``value_type`` value into a ``table_type`` column unchanged, or
    refuses it loudly; False where it would change values quietly (`08123` into bigint, decimals into
    double precision or numeric(10,3)). Both are canonical names (`canonical_type`, format_type).
    """
    if table_type == value_type or table_type in _WIDER.get(value_type, []):
        return True
    if base_type(table_type) in ("text", "character varying", "citext"):  # too long for varchar(n) is an error
        return True
    return value_type == "bigint" and table_type in ("integer", "smallint")  # out of range is an error


def comparable(pg_type: str) -> str:
    """One spelling of a type for comparison; a type this runner cannot pin is compared as written."""
    try:
        return canonical_type(pg_type)
    except InvalidPgType:
        return pg_type


__all__ = [
    "CHAINS", "PG_TYPE_HINT", "PINNABLE", "InvalidPgType", "accepts", "base_type", "canonical_type", "column_pg_type",
    "comparable", "dlt_column",
]
