"""S3 / MinIO credentials shared by the `s3` source and destination: an s3fs filesystem, every request bounded."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from cai_common import BaseConfig
from cai_common.configuration import worker_file
from cai_common.settings import settings


def _without_expect_continue(request: Any, **_: Any) -> None:
    """botocore asks for `Expect: 100-continue` on uploads, and aiohttp waits for the `100 Continue`
    with no timeout: a server (or a dead link) that never answers holds the upload, and the worker, for
    ever. Without it the body goes at once and the read timeout bounds the wait for the answer."""
    request.headers.pop("Expect", None)


def _aiohttp_session_class() -> Any:
    """aiobotocore's `AioSession`, imported without its optional httpx backend unless httpx is loaded.

    aiobotocore imports httpx (with its CLI's rich and click: 6 MB, 0.1 s) wherever it is installed,
    and Prefect installs it; every S3 client here talks through aiohttp. A process that has httpx
    already (a Prefect flow run) loses nothing; one that has not (a direct run, `cai load-csv`) never
    loads it. Other code importing httpx later gets it as usual.
    """
    import sys

    if "aiobotocore.session" in sys.modules or {"httpx", "httpx2"} & sys.modules.keys():
        from aiobotocore.session import AioSession
        return AioSession
    sys.modules["httpx"] = sys.modules["httpx2"] = None  # type: ignore[assignment]  # ImportError for both
    try:
        from aiobotocore.session import AioSession
    finally:
        del sys.modules["httpx"], sys.modules["httpx2"]
    return AioSession


@dataclass(frozen=True)
class BoundedSockets:
    """An aiohttp socket factory: TCP keepalive, and TCP_USER_TIMEOUT (Linux) so a send that the peer
    never acknowledges fails after ``seconds`` instead of the kernel's default of about 15 minutes."""

    seconds: float

    def __call__(self, addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.seconds * 1000))
        return sock


class S3Credentials(BaseConfig):
    """Access to an S3 or MinIO endpoint; MINIO_* environment variables fill what a config leaves out."""

    aws_access_key_id: str | None = Field(None, description="access key id (env MINIO_ACCESS_KEY)")
    aws_secret_access_key: SecretStr | None = Field(None, description="secret key (env MINIO_SECRET_KEY)")
    endpoint_url: str | None = Field(None, description="S3 endpoint, e.g. http://minio:9000 (env MINIO_ENDPOINT)")
    region_name: str | None = Field(None, description="region; MinIO ignores it")
    ca_bundle: str | None = Field(None, description="CA certificate file (PEM) that signed an https endpoint's "
                                                    "certificate; default: the system's CAs (or env AWS_CA_BUNDLE)")
    connect_timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for a connection to the endpoint")
    read_timeout: float = Field(60.0, gt=0, le=3600, description="seconds to wait for an answer (per read)")
    attempts: int = Field(3, ge=1, le=10, description="tries of each request on connection errors and 5xx")

    @model_validator(mode="before")
    @classmethod
    def _env_fallbacks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        env = settings()
        secret = env.minio_secret_key.get_secret_value() if env.minio_secret_key else None
        fallbacks = {"endpoint_url": env.minio_endpoint, "aws_access_key_id": env.minio_access_key,
                     "aws_secret_access_key": secret}
        filled = dict(data)
        for key, value in fallbacks.items():
            if filled.get(key) in (None, "") and value:
                filled[key] = value
        return filled

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, value: str | None) -> str | None:
        return worker_file(value, "CA certificate file")

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        """An S3 endpoint is an http(s) URL (schemes compared case-insensitively); `file:///etc` is not one."""
        if value is not None and value.split("://", 1)[0].lower() not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// URL, got `{value}`")
        return value

    def endpoint(self) -> str:
        """The S3 endpoint these credentials talk to (AWS when none is set)."""
        return (self.endpoint_url or "https://s3.amazonaws.com").rstrip("/")

    def filesystem(self, **extra: Any) -> Any:
        """An s3fs filesystem for these credentials, never cached, every request bounded.

        botocore retries each request `attempts` times within the timeouts; s3fs's own retry loop
        (5 tries by default, around botocore's) would multiply that, so it makes one.
        """
        import fsspec

        from dlt_destinations.s3.objects import S3ObjectStream

        AioSession = _aiohttp_session_class()

        session = AioSession()
        session.register("before-send.s3", _without_expect_continue)
        fs = fsspec.filesystem("s3", skip_instance_cache=True, session=session, **self.storage_options(), **extra)
        fs.retries = 1
        fs.open_stream = lambda path: S3ObjectStream(fs, path)  # see dlt_destinations.writer.open_read
        return fs

    def list_bucket(self, bucket: str) -> str:
        """List the bucket (a `cai doctor` probe); raises when it is missing or cannot be listed."""
        self.filesystem().ls(bucket, refresh=True)
        return f"bucket `{bucket}` listed"

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (contains the secret: never log it)."""
        options: dict[str, Any] = {}
        if self.aws_access_key_id:
            options["key"] = self.aws_access_key_id
        if self.aws_secret_access_key:
            options["secret"] = self.aws_secret_access_key.get_secret_value()
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region_name:
            client_kwargs["region_name"] = self.region_name
        if self.ca_bundle:
            client_kwargs["verify"] = str(Path(self.ca_bundle).expanduser())
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        # Every request is bounded: a link that goes silent fails the file after attempts x timeouts
        # instead of holding the worker. The read timeout covers waiting for an answer; a send into a
        # dead route is bounded by the kernel (TCP_USER_TIMEOUT: unacknowledged data for that long
        # closes the connection), which no HTTP-level timeout reaches.
        options["config_kwargs"] = {"connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
                                    "retries": {"max_attempts": self.attempts, "mode": "standard"},
                                    "connector_args": {"socket_factory": BoundedSockets(self.read_timeout)}}
        return options
