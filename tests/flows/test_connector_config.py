"""read_connector_config: the spec's join, override merging, typed validation with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cai_common import ConnectorConfigError, UnknownTypeError
from dlt_destinations.postgres import PostgresDestinationConfig
from dlt_sources.s3 import S3SourceConfig
from flows.store import catalog
from flows.store.connector_config import ConnectorConfig, read_connector_config

FOLDER = {"path": "/data/incoming", "file_pattern": "*.csv"}
PG = {"host": "warehouse.example", "database": "dw", "username": "loader", "password": "pw-123", "schema": "raw"}


def test_returns_the_spec_dict_with_overrides_merged(make_connector: Callable[..., int]) -> None:
    connector_id = make_connector(
        "filesystem", {**FOLDER, "csv": {"delimiter": ",", "encoding": "utf-8"}},
        "postgres", PG,
        source_override={"file_pattern": "lab_*.csv", "csv": {"delimiter": ";"}},
        destination_override={"schema": "clinical", "password": None},
        name="merge me",
    )
    config = read_connector_config(connector_id)
    assert config == {
        "connector_id": connector_id,
        "connector_name": "merge me",
        "source_type": "filesystem",
        "source_config": {"path": "/data/incoming", "file_pattern": "lab_*.csv",
                          "csv": {"delimiter": ";", "encoding": "utf-8"}},
        "destination_type": "postgres",
        "destination_config": {"host": "warehouse.example", "database": "dw", "username": "loader",
                               "schema": "clinical"},
    }


def test_unknown_connector_raises_value_error(config_store: str) -> None:
    with pytest.raises(ValueError, match=r"^connector 424242 not found$"):
        read_connector_config(424242)


@pytest.mark.parametrize(
    ("destination_override", "field", "expected"),
    [
        ({"port": "abc"}, "port", "must be an integer, got `'abc'`"),
        ({"write_disposition": "upsert"}, "write_disposition", "must be 'append', 'replace' or 'merge'"),
        ({"write_disposition": "merge"}, "primary_key", "is required when `write_disposition` is `merge`"),
        ({"host": None, "connection_string": None}, "host", "is required"),
    ],
)
def test_bad_destination_config_names_connector_field_and_expectation(
    make_connector: Callable[..., int], destination_override: dict[str, Any], field: str, expected: str
) -> None:
    connector_id = make_connector("filesystem", FOLDER, "postgres", PG, destination_override=destination_override)
    with pytest.raises(ConnectorConfigError) as caught:
        read_connector_config(connector_id)
    error = caught.value
    assert (error.connector_id, error.side, error.field) == (connector_id, "destination", field)
    assert str(error).startswith(f"connector {connector_id}: destination `{field}` ")
    assert expected in str(error)


def test_missing_source_field_is_named(make_connector: Callable[..., int]) -> None:
    connector_id = make_connector("filesystem", {"file_pattern": "*.csv"}, "postgres", PG)
    with pytest.raises(ConnectorConfigError, match=rf"connector {connector_id}: source `path` is required"):
        read_connector_config(connector_id)


def test_secret_values_are_never_echoed_in_errors(make_connector: Callable[..., int]) -> None:
    connector_id = make_connector("filesystem", FOLDER, "postgres", PG, destination_override={"password": 987654})
    with pytest.raises(ConnectorConfigError) as caught:
        read_connector_config(connector_id)
    assert "987654" not in str(caught.value)
    assert "destination `password` must be a string, got `***`" in str(caught.value)


def test_unknown_type_code_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTypeError) as caught:
        ConnectorConfig.from_dict({"connector_id": 9, "connector_name": "x", "source_type": "ftp",
                                   "source_config": {}, "destination_type": "postgres", "destination_config": PG})
    message = str(caught.value)
    assert message.startswith("connector 9: source `type` `ftp` is not a known source type")
    assert "filesystem" in message and "sql_database" in message and "minio" in message


def test_connector_without_defined_destination_is_a_config_error(config_store: str) -> None:
    source_id = catalog.define_source("orphan source", "filesystem", FOLDER)
    connector_id = catalog.create_connector("orphan", source_id, None)
    with pytest.raises(ConnectorConfigError, match=r"destination `defined_destination_id` must point at"):
        read_connector_config(connector_id)


@pytest.mark.parametrize(("source_code", "destination_code"), [("minio", "truenas"), ("postgres", "local")])
def test_alias_codes_resolve_to_their_types(source_code: str, destination_code: str) -> None:
    sources = {"minio": {"bucket": "b"}, "postgres": {**PG, "query": "SELECT 1"}}
    destinations = {"truenas": {"host": "nas", "username": "u", "password": "p", "path": "/mnt/in"},
                    "local": {"path": "/tmp/out"}}
    config = ConnectorConfig.from_dict({
        "connector_id": 1, "connector_name": "aliases",
        "source_type": source_code, "source_config": sources[source_code],
        "destination_type": destination_code, "destination_config": destinations[destination_code],
    })
    assert (config.source_type, config.destination_type) == (
        {"minio": "s3", "postgres": "sql_database"}[source_code],
        {"truenas": "sftp", "local": "nfs"}[destination_code],
    )


def test_minio_env_vars_fill_what_the_config_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "http://minio.internal:9000")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "env-key")
    monkeypatch.setenv("MINIO_SECRET_KEY", "env-secret")
    from_env = S3SourceConfig.parse({"bucket": "in"}, connector_id=1, side="source")
    assert from_env.endpoint_url == "http://minio.internal:9000"
    options = from_env.storage_options()
    assert {k: options[k] for k in ("key", "secret", "client_kwargs")} == {
        "key": "env-key", "secret": "env-secret", "client_kwargs": {"endpoint_url": "http://minio.internal:9000"}
    }
    assert (options["config_kwargs"]["connect_timeout"], options["config_kwargs"]["read_timeout"]) == (10.0, 60.0)
    explicit = S3SourceConfig.parse(
        {"bucket": "in", "aws_access_key_id": "cfg-key", "endpoint_url": "http://s3.other"}, connector_id=1,
        side="source",
    )
    assert (explicit.aws_access_key_id, explicit.endpoint_url) == ("cfg-key", "http://s3.other")
    assert explicit.secret_values() == ["env-secret"]


def test_unknown_keys_become_warnings_not_errors() -> None:
    config = ConnectorConfig.from_dict({
        "connector_id": 3, "connector_name": "typo", "source_type": "filesystem",
        "source_config": {**FOLDER, "file_patern": "*.txt"}, "destination_type": "postgres", "destination_config": PG,
    })
    assert config.warnings() == ["source config key `file_patern` is not used by `filesystem`"]


def test_postgres_dsn_from_fields_and_socket_dirs() -> None:
    fields = PostgresDestinationConfig.parse(PG, connector_id=1, side="destination")
    assert fields.dsn() == "postgresql://loader:pw-123@warehouse.example:5432/dw"
    socket = PostgresDestinationConfig.parse(
        {"connection_string": "postgresql://postgres:@/postgres?host=/tmp/sock"}, connector_id=1, side="destination"
    )
    assert socket.dsn(dummy_password=True) == "postgresql://postgres:x@localhost/postgres?host=/tmp/sock"


def test_a_boolean_is_not_a_port(make_connector: Callable[..., int]) -> None:
    connector_id = make_connector("filesystem", FOLDER, "postgres", PG, destination_override={"port": True})
    with pytest.raises(ConnectorConfigError, match=rf"connector {connector_id}: destination `port` must be a number, "
                                                   r"got `true`"):
        read_connector_config(connector_id)


@pytest.mark.parametrize(
    ("source_config", "source_override", "expected"),
    [
        ('{"path": "/data", "password": "hunter2-secret"}', None,
         "source config (`config` of the defined source) must be a JSON object, got a JSON string"),
        ([["path", "/etc"], ["password", "hunter2-secret"]], None,
         "source config (`config` of the defined source) must be a JSON object, got a JSON array"),
        (FOLDER, "hunter2-secret", "source `source_config_override` must be a JSON object or null, got a JSON string"),
    ],
    ids=["config-string", "config-array-of-pairs", "override-string"],
)
def test_a_config_that_is_not_an_object_is_named_and_never_quoted(
    make_connector: Callable[..., int], source_config: Any, source_override: Any, expected: str,
) -> None:
    connector_id = make_connector("filesystem", source_config, "postgres", PG, source_override=source_override)
    with pytest.raises(ConnectorConfigError) as caught:
        read_connector_config(connector_id)
    assert str(caught.value) == f"connector {connector_id}: {expected}"
    assert "hunter2" not in str(caught.value)


def test_rest_headers_are_secrets_everywhere() -> None:
    from dlt_destinations.rest_api import RestApiDestinationConfig

    config = RestApiDestinationConfig.parse(
        {"url": "https://api.example/upload", "auth_type": "basic", "username": "svc", "password": "pw-basic-77",
         "headers": {"X-Session": "session-token-991", "Accept": "*/*"}}, connector_id=3, side="destination")
    secrets = config.secret_values()
    assert {"pw-basic-77", "session-token-991", "c3ZjOnB3LWJhc2ljLTc3"} <= set(secrets)  # base64("svc:pw-basic-77")
    assert "*/*" not in secrets  # too short to be a secret, and masking it would garble messages
    with pytest.raises(ConnectorConfigError) as caught:
        RestApiDestinationConfig.parse({"url": "https://api.example/upload", "headers": "Bearer tok-abc-123"},
                                       connector_id=3, side="destination")
    assert "tok-abc-123" not in str(caught.value) and "destination `headers` must be" in str(caught.value)


def test_url_schemes_are_case_insensitive_and_s3_endpoints_only_http() -> None:
    from dlt_destinations.rest_api import RestApiDestinationConfig

    assert RestApiDestinationConfig.parse({"url": "HTTPS://api.example/upload"}, connector_id=5,
                                          side="destination").url == "HTTPS://api.example/upload"
    with pytest.raises(ConnectorConfigError) as caught:
        S3SourceConfig.parse({"bucket": "b", "endpoint_url": "file:///etc"}, connector_id=5, side="source")
    assert str(caught.value) == ("connector 5: source `endpoint_url` must be an http:// or https:// URL, "
                                 "got `file:///etc`")
