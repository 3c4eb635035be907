"""Typed config of the PostgreSQL destination (spec 6.1)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from cai_common import FieldProblem, PostgresCredentials


class PostgresDestinationConfig(PostgresCredentials):
    """Tables in a PostgreSQL schema, loaded by dlt's postgres destination."""

    schema_name: str = Field("public", alias="schema", min_length=1, description="target schema (dlt dataset)")
    table_name: str | None = Field(None, description="target table; default: the file stem or connector name")
    write_disposition: Literal["append", "replace", "merge"] = Field(
        "append", description="append rows, replace the table, or merge on `primary_key`"
    )
    primary_key: str | list[str] | None = Field(None, description="key column(s) for merge")

    def location(self) -> str:
        """Server, database, schema and table (tables named after files or the connector when unset)."""
        return f"{super().location()} {self.schema_name} {self.table_name or '*'}"

    @model_validator(mode="after")
    def _merge_needs_key(self) -> Self:
        if self.write_disposition == "merge" and not self.primary_key:
            raise FieldProblem("primary_key", "is required when `write_disposition` is `merge`")
        return self
