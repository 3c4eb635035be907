"""The postgres destination factory: capabilities computed once per naming convention, each caller its own copy."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from dlt.common.normalizers.naming.sql_cs_v1 import NamingConvention as CaseSensitive
from dlt.destinations.impl.postgres.factory import postgres as dlt_postgres

from dlt_destinations.postgres.client import ExactTypeMapper, postgres

DSN = "postgresql://loader@127.0.0.1:5432/clinic"


def _fields(caps: Any) -> dict[str, Any]:
    """Capabilities as comparable values (dlt builds a new `functools.partial` each time)."""
    return {k: (v.func, v.args, v.keywords) if isinstance(v, partial) else v for k, v in dict(caps).items()}


def test_capabilities_are_dlts_own_with_the_configuration_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = postgres(credentials=DSN)
    resolved: list[Any] = []
    resolve = factory.configuration

    def counting(initial: Any, accept_partial: bool = False) -> Any:
        resolved.append(initial)
        return resolve(initial, accept_partial=accept_partial)

    monkeypatch.setattr(factory, "configuration", counting)
    first = factory.capabilities()
    for _ in range(5):
        assert _fields(factory.capabilities()) == _fields(first)
    assert len(resolved) == 1
    # the same as dlt computes it every time, with this product's type mapper
    expected = dlt_postgres(credentials=DSN).capabilities()
    expected.type_mapper = ExactTypeMapper
    assert _fields(first) == _fields(expected)


def test_each_caller_gets_its_own_copy() -> None:
    factory = postgres(credentials=DSN)
    mine = factory.capabilities()
    mine.preferred_loader_file_format = "parquet"  # dlt's pipeline sets fields on the one it gets
    assert factory.capabilities().preferred_loader_file_format != "parquet"


def test_a_naming_convention_gets_capabilities_adjusted_for_it() -> None:
    factory = postgres(credentials=DSN)
    naming = CaseSensitive()
    adjusted = factory.capabilities(naming=naming)
    expected = dlt_postgres(credentials=DSN).capabilities(naming=naming)
    assert adjusted.casefold_identifier is expected.casefold_identifier
    assert adjusted.has_case_sensitive_identifiers == expected.has_case_sensitive_identifiers
    default = dlt_postgres(credentials=DSN).capabilities()
    assert factory.capabilities().casefold_identifier is default.casefold_identifier


def test_a_replaced_table_refuses_insert_load_files_and_the_old_rows_stay(
    config_store: str, schema_name: str, tmp_path: Any,
) -> None:
    """Only a CSV COPY empties a replaced table (in its own transaction); an INSERT job would append to
    it. The state row's INSERT job is made to land once; a replaced table's INSERT job must still be refused."""
    import dlt
    import psycopg
    from dlt.pipeline.exceptions import PipelineStepFailed

    from dlt_destinations.postgres import PostgresDestinationConfig
    from dlt_destinations.postgres import postgres as destination

    config = PostgresDestinationConfig.model_validate({"connection_string": config_store, "schema": schema_name})
    pipeline = dlt.pipeline("replace_guard", destination=destination(config), dataset_name=schema_name,
                            pipelines_dir=str(tmp_path))
    pipeline.run([{"id": 1}, {"id": 2}], table_name="visits", write_disposition="append")
    with pytest.raises(PipelineStepFailed, match="only CSV load files can replace it"):
        pipeline.run([{"id": 3}], table_name="visits", write_disposition="replace", loader_file_format="insert_values")
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f'SELECT id FROM "{schema_name}".visits ORDER BY id').fetchall() == [(1,), (2,)]
