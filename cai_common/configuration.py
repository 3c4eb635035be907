"""Typed config bases: every setting has a type, a default and a description; secrets are SecretStr."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cai_common.errors import ConnectorConfigError

ConfigT = TypeVar("ConfigT", bound="BaseConfig")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
"""libpq's `sslmode` values."""


class BaseConfig(BaseModel):
    """Base of every source/destination config.

    Unknown keys are kept (the platform's backend may store keys this runner does not use) and
    reported by :meth:`unknown_keys` so a typo shows up in the run's log instead of vanishing.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def unknown_keys(self) -> list[str]:
        """Keys present in the stored config that no field of this model reads."""
        return sorted(self.model_extra or {})

    def secret_values(self) -> list[str]:
        """Plain values of every secret field, for masking in logs and run records.

        SecretStr fields, and every value of a field marked secret-bearing (``json_schema_extra=
        {"secret": True}``, e.g. REST `headers`, which carry tokens as often as not).
        """
        values = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
            elif _secret_bearing(info) and isinstance(value, dict):
                # Short values (`2`, `json`) are not secrets, and masking them would garble every message.
                values.extend(str(v) for v in value.values() if len(str(v)) >= 6)
        return values

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Names of the fields that hold secrets (SecretStr, or marked secret-bearing)."""
        return [name for name, info in cls.model_fields.items()
                if info.annotation in (SecretStr, SecretStr | None) or _secret_bearing(info)]

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads `true` as 1 for an int field: a port of `true` is a mistake, not port 1."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in (int, float, int | None, float | None):
            raise ValueError(f"must be a number, got `{str(value).lower()}`")
        return value

    def location(self) -> str:
        """Where this source reads or this destination writes (no credentials): part of a pipeline's identity.

        Every kind says it: a change of location is a new pipeline, with its own state and ledger.
        """
        raise NotImplementedError(f"{type(self).__name__} does not say where it reads or writes")

    @classmethod
    def parse(cls, raw: dict[str, Any], *, connector_id: int | None, side: str) -> Self:
        """Validate a stored config dict, turning pydantic's errors into a ConnectorConfigError.

        Args:
            raw: the merged config as stored (JSON object).
            connector_id: named in the error.
            side: ``"source"`` or ``"destination"``, named in the error.
        """
        if not isinstance(raw, dict):  # never quoted: it may hold a password
            raise ConnectorConfigError(connector_id, side, None, f"must be a JSON object, got {json_kind(raw)}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise _config_error(cls, exc, connector_id, side) from None


def json_kind(value: Any) -> str:
    """What a JSON value is, in words, without quoting it: `a JSON string`, `a JSON array`..."""
    kinds = {bool: "true or false", str: "a JSON string", list: "a JSON array", dict: "a JSON object",
             type(None): "null", int: "a number", float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _secret_bearing(info: Any) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def _config_error(
    model: type[BaseModel], exc: ValidationError, connector_id: int | None, side: str
) -> ConnectorConfigError:
    """The first validation problem, worded for a person; secret inputs are never echoed."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or None
    field_info = model.model_fields.get(str(first["loc"][0])) if first["loc"] else None
    secret = field_info is not None and (field_info.annotation in (SecretStr, SecretStr | None)
                                         or _secret_bearing(field_info))
    msg = first["msg"]
    if first["type"] == "missing":
        problem = "is required" + (f" ({field_info.description})" if field_info and field_info.description else "")
    elif first["type"].startswith("value_error"):
        problem = msg.removeprefix("Value error, ")
        loc = getattr(first.get("ctx", {}).get("error"), "field", None) or loc
    else:
        got = "`***`" if secret else f"`{first.get('input')!r}`"
        expected = _EXPECTED.get(first["type"]) or msg.replace("Input should be", "must be", 1)
        problem = f"{expected}, got {got}"
    extra = len(exc.errors()) - 1
    if extra:
        problem += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return ConnectorConfigError(connector_id, side, loc, problem)


# pydantic error type -> what a person should put there instead.
_EXPECTED = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}


class FieldProblem(ValueError):
    """Raised inside model validators to point at one field."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(message)


class PostgresCredentials(BaseConfig):
    """A PostgreSQL server: separate fields (spec 5.1 / 6.1) or one `connection_string`."""

    host: str | None = Field(None, description="server host name or unix socket directory")
    port: int = Field(5432, ge=1, le=65535, description="server TCP port")
    database: str | None = Field(None, description="database name")
    username: str | None = Field(None, description="login role")
    password: SecretStr | None = Field(None, description="login password")
    connection_string: SecretStr | None = Field(
        None, description="postgresql://user:pass@host:port/db; wins over the separate fields"
    )
    sslmode: SslMode | None = Field(
        None, description="TLS: disable, allow, prefer (libpq's default), require, verify-ca or verify-full"
    )
    sslrootcert: str | None = Field(None, description="TLS: CA certificate file the server's certificate must chain to")
    sslcert: str | None = Field(None, description="TLS: client certificate file")
    sslkey: str | None = Field(None, description="TLS: client private key file")

    @model_validator(mode="after")
    def _need_a_server(self) -> Self:
        if self.connection_string is None and not (self.host and self.database):
            raise FieldProblem(
                "host" if not self.host else "database",
                "is required: give `host` and `database` (with `username`/`password`) or a `connection_string`",
            )
        return self

    @model_validator(mode="after")
    def _tls_files_exist(self) -> Self:
        for name in ("sslrootcert", "sslcert", "sslkey"):
            path = getattr(self, name)
            try:
                worker_file(None if path == "system" else path)
            except ValueError as exc:
                raise FieldProblem(name, str(exc)) from None
        return self

    def tls_parameters(self) -> dict[str, str]:
        """The TLS settings given as fields (libpq keywords), for the DSN."""
        values = {"sslmode": self.sslmode, "sslrootcert": self.sslrootcert, "sslcert": self.sslcert,
                  "sslkey": self.sslkey}
        return {k: str(Path(v).expanduser()) if k != "sslmode" and v != "system" else v
                for k, v in values.items() if v}

    def location(self) -> str:
        """The server and database, without credentials: `postgresql://host:port/db`."""
        return server_location(self.dsn())

    def dsn(self, *, dummy_password: bool = False) -> str:
        """The libpq URL for this server (contains the password: never log it).

        Args:
            dummy_password: put a placeholder password in when none is set; dlt insists on one even
                under trust auth.
        """
        if self.connection_string is not None:
            url = with_parameters(self.connection_string.get_secret_value(), self.tls_parameters())
            return _with_dummy_password(url) if dummy_password else url
        password = self.password.get_secret_value() if self.password else ("x" if dummy_password else "")
        user = quote(self.username or "postgres", safe="")
        auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
        host = self.host or ""
        query = self.tls_parameters()
        if host.startswith("/"):  # unix socket directory: libpq takes it as a query parameter
            query = {"host": host, **query}
            host = "localhost"
        url = f"postgresql://{auth}{host}:{self.port}/{quote(self.database or '')}"
        return f"{url}?{urlencode(query)}" if query else url


def with_parameters(url: str, parameters: dict[str, str]) -> str:
    """A libpq URL with ``parameters`` set in its query string (replacing the URL's own values)."""
    if not parameters:
        return url
    if "://" not in url:  # a conninfo string (`host=... dbname=...`): later keywords win
        return url + "".join(f" {key}='{value}'" for key, value in parameters.items())
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **parameters}
    return urlunsplit(parts._replace(query=urlencode(query)))


def worker_file(value: str | None, what: str = "file") -> str | None:
    """A path a config names (a CA file, a key), checked to exist on the worker that runs it."""
    if value and not Path(value).expanduser().is_file():
        raise ValueError(f"must be a readable {what}; `{value}` does not exist on this worker")
    return value


def server_location(dsn: str) -> str:
    """`postgresql://host:port/db` of a libpq URL or conninfo: no user, password or options.

    Parsed by libpq through psycopg2, which dlt's PostgreSQL destination loads in every data-path
    process anyway; psycopg 3 would add 16 MB to a process that needs nothing else of it (`cai load-csv`).
    """
    from psycopg2.extensions import parse_dsn

    parts = parse_dsn(dsn)
    return f"postgresql://{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def _with_dummy_password(url: str) -> str:
    """Add a placeholder password to a URL that has a user but none (dlt requires one)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        # no user part at all: libpq's defaults apply; dlt still needs user:password
        netloc, slash, tail = rest.partition("/")
        host = netloc or "localhost"
        return f"{scheme}://postgres:x@{host}{slash}{tail}"
    userinfo, _, after = rest.partition("@")
    if ":" in userinfo and userinfo.split(":", 1)[1]:
        return url
    user = userinfo.split(":", 1)[0] or "postgres"
    host_part, slash, tail = after.partition("/")
    return f"{scheme}://{user}:x@{host_part or 'localhost'}{slash}{tail}"
