"""Typed config of the REST API upload destination (spec 6.5)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from cai_common import BaseConfig
from cai_common.configuration import FieldProblem, worker_file


class RestApiDestinationConfig(BaseConfig):
    """An HTTP endpoint that receives each file as multipart/form-data or a raw body."""

    url: str = Field(..., pattern=r"^(?i:https?)://",
                     description="upload endpoint; may hold {file_name} / {relative_path}")
    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method")
    auth_type: Literal["bearer_token", "api_key", "basic"] | None = Field(None, description="authentication")
    token: SecretStr | None = Field(None, description="bearer token (auth_type bearer_token)")
    api_key: SecretStr | None = Field(None, description="API key (auth_type api_key)")
    api_key_header: str = Field("X-API-Key", description="header carrying the API key")
    username: str | None = Field(None, description="user (auth_type basic)")
    password: SecretStr | None = Field(None, description="password (auth_type basic)")
    file_field_name: str = Field("file", description="form field holding the file")
    additional_fields: dict[str, str] = Field(default_factory=dict, description="extra form fields")
    use_multipart: bool = Field(True, description="multipart/form-data, or the file as the raw body")
    content_type: str = Field("application/octet-stream", description="content type of the file part/body")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (masked like secrets)",
                                    json_schema_extra={"secret": True})
    idempotency_header: str | None = Field(
        "Idempotency-Key", description="header carrying one key per source file version, the same on every attempt "
                                       "and every re-run, so the endpoint can drop a repeated upload; null: not sent")
    attempts: int = Field(3, ge=1, le=10, description="tries per file on connection errors, 429 and 5xx")
    retry_backoff_seconds: float = Field(1.0, ge=0, le=60, description="first retry delay, doubled each time")
    connect_timeout: float = Field(30.0, gt=0, description="seconds to wait for a connection")
    read_timeout: float = Field(300.0, gt=0, description="seconds to wait for the server's answer")
    verify: str | None = Field(None, description="CA certificate file (PEM) that signed an https server's "
                                                 "certificate; default: the system's CAs. Never turns checks off")

    @field_validator("verify")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        return worker_file(value, "CA certificate file")

    def tls_verify(self) -> str | bool:
        """What requests' `verify` gets: the CA file, or True (the system's CAs); never False."""
        return str(Path(self.verify).expanduser()) if self.verify else True

    def secret_values(self) -> list[str]:
        """The secret fields and header values, plus HTTP Basic's base64 form (servers echo it back)."""
        values = super().secret_values()
        if self.username and self.password is not None:
            pair = f"{self.username}:{self.password.get_secret_value()}".encode()
            values.append(base64.b64encode(pair).decode())
        return values

    def location(self) -> str:
        """The method and URL (hashed into the pipeline name, never shown: a URL may carry a token)."""
        return f"{self.method} {self.url}"

    @model_validator(mode="after")
    def _auth_fields(self) -> Self:
        needed = {"bearer_token": ["token"], "api_key": ["api_key"], "basic": ["username", "password"]}
        for name in needed.get(self.auth_type or "", []):
            if not getattr(self, name):
                raise FieldProblem(name, f"is required when `auth_type` is `{self.auth_type}`")
        return self
