"""Typed config of the SFTP / TrueNAS destination (spec 6.3)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from cai_common import BaseConfig, FieldProblem


class SftpDestinationConfig(BaseConfig):
    """A directory on an SFTP server, reached with a password or a private key."""

    host: str = Field(..., min_length=1, description="server host name")
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    username: str = Field(..., min_length=1, description="login user")
    password: SecretStr | None = Field(None, description="login password")
    pkey_path: str | None = Field(None, description="path to a private key file")
    path: str = Field(..., min_length=1, description="remote directory, created if missing")
    known_hosts: str | None = Field(None, description="known_hosts file to verify the server key against")
    host_key_policy: Literal["reject", "accept-new"] = Field(
        "reject", description="unknown host keys: refuse, or trust on first use"
    )
    atomic_rename: bool = Field(True, description="write to a temp name then rename (off for servers that cannot)")
    connect_timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for the SSH connection")
    keepalive_seconds: float = Field(
        15.0, gt=0, le=600,
        description="SSH keepalive interval; a link silent for 4 of them is dropped (the file fails, the run goes on)",
    )

    def location(self) -> str:
        """The server, login and directory."""
        return f"sftp://{self.username}@{self.host}:{self.port}/{self.path.strip('/')}"

    @model_validator(mode="after")
    def _need_auth(self) -> Self:
        if self.password is None and not self.pkey_path:
            raise FieldProblem("password", "or `pkey_path` is required to log in")
        return self
