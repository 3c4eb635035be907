"""Uploading one file to a REST endpoint (spec 6.5): streamed, authenticated, retried.

The body (multipart/form-data, or the file as the raw body) is produced piece by piece from the
source while a SHA-256 is computed, with an exact Content-Length; nothing holds the whole file. Each
attempt reopens the source. Connection errors, 429 and 5xx are retried (3 attempts in all) with
exponential backoff and jitter, honouring `Retry-After`; any other 4xx fails at once. Only a 2xx
answer to the request that carried the body counts as delivered: redirects are never followed (a
302/303 would be followed with a GET whose 200 says nothing about the file, a 307 would send it
again), so a 3xx fails the file, naming its `Location`.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import hashlib
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import requests
from fsspec import AbstractFileSystem
from requests.auth import HTTPBasicAuth

from cai_common import CaiError
from dlt_destinations.rest_api.configuration import RestApiDestinationConfig
from dlt_destinations.writer import CHUNK, open_read, safe_join

RETRY_AFTER_CAP = 300.0
"""Longest `Retry-After` honoured, in seconds; a server asking for more gets this."""


class UploadRefused(CaiError, OSError):
    """The endpoint answered with a non-retryable status (a 4xx other than 429) or every attempt failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Uploaded:
    """A 2xx upload: bytes sent, their SHA-256, the final status and how many attempts it took."""

    bytes: int
    sha256: str
    status: int
    attempts: int


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class StreamedBody:
    """A request body read from the source in CHUNK pieces, with its exact length known up front.

    requests sends an iterable with ``__len__`` as a streamed body with that Content-Length.
    """

    def __init__(self, opener: Callable[[], IO[bytes]], size: int, head: bytes = b"", tail: bytes = b"") -> None:
        self._opener, self._size, self._head, self._tail = opener, size, head, tail
        self.sha256 = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        if self._head:
            yield self._head
        with self._opener() as source:
            while chunk := source.read(CHUNK):
                self.sha256.update(chunk)
                self.sent += len(chunk)
                yield chunk
        if self.sent != self._size:
            raise OSError(f"the source changed while it was sent: read {self.sent} bytes of {self._size}")
        if self._tail:
            yield self._tail


def build_body(config: RestApiDestinationConfig, opener: Callable[[], IO[bytes]], size: int,
               file_name: str) -> tuple[StreamedBody, dict[str, str]]:
    """The body and its headers: multipart/form-data (extra fields first, then the file) or raw."""
    if not config.use_multipart:
        disposition = f"attachment; filename=\"{_quoted(file_name)}\"; filename*=UTF-8''{quote(file_name)}"
        return StreamedBody(opener, size), {"Content-Type": config.content_type, "Content-Disposition": disposition}
    boundary = f"cai-{uuid.uuid4().hex}"
    head = b""
    for name, value in config.additional_fields.items():
        head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{_quoted(name)}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{_quoted(config.file_field_name)}\"; "
             f"filename=\"{_quoted(file_name)}\"\r\nContent-Type: {config.content_type}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return StreamedBody(opener, size, head, tail), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def auth_headers(config: RestApiDestinationConfig) -> dict[str, str]:
    """The Authorization / API key header of `bearer_token` and `api_key` (basic goes through requests' auth)."""
    if config.auth_type == "bearer_token" and config.token is not None:
        return {"Authorization": f"Bearer {config.token.get_secret_value()}"}
    if config.auth_type == "api_key" and config.api_key is not None:
        return {config.api_key_header: config.api_key.get_secret_value()}
    return {}


def basic_auth(config: RestApiDestinationConfig) -> HTTPBasicAuth | None:
    """requests' HTTP Basic auth for `auth_type` basic."""
    if config.auth_type == "basic" and config.username and config.password is not None:
        return HTTPBasicAuth(config.username, config.password.get_secret_value())
    return None


def upload_url(config: RestApiDestinationConfig, relative_path: str) -> str:
    """The config's URL, with `{file_name}` / `{relative_path}` placeholders filled (URL-quoted)."""
    name = relative_path.rsplit("/", 1)[-1]
    return config.url.replace("{file_name}", quote(name)).replace("{relative_path}", quote(relative_path))


def retry_after(header: str | None) -> float | None:
    """A `Retry-After` header's wait in seconds (delay-seconds or an HTTP date), between 0 and
    `RETRY_AFTER_CAP`; None when there is none or the server sent something else (`soon`, `NaN`)."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def retry_delay(response: requests.Response | None, attempt: int, backoff: float) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After, else backoff * 2^n plus jitter."""
    waited = retry_after(response.headers.get("Retry-After") if response is not None else None)
    if waited is not None:
        return waited
    return backoff * 2 ** (attempt - 1) + random.uniform(0, backoff)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _ssl_reason(exc: Exception) -> str:
    """OpenSSL's reason out of requests' nested SSLError text, e.g. `certificate verify failed: ...`."""
    import re

    found = re.search(r"SSLError\(\d*,? ?['\"]?\[?[^\]]*\]? ?([^'\"]+)", str(exc))
    return (found[1] if found else str(exc)).strip()[:200]


def idempotency_key(file_url: str, info: dict[str, Any]) -> str | None:
    """One key per version of a source file (fsspec ``info``): its URL, size, ETag, modification time and
    inode hashed; None when the filesystem tells neither an ETag nor a modification time."""
    from dlt.common.storages.fsspec_filesystem import MTIME_DISPATCH

    etag = info.get("ETag") or info.get("etag")
    scheme = file_url.split("://", 1)[0] if "://" in file_url else "file"
    modified = None
    if scheme in MTIME_DISPATCH:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            modified = MTIME_DISPATCH[scheme](info)
    if etag is None and modified is None:
        return None
    version = [file_url, info.get("size"), etag, modified.isoformat() if modified else None, info.get("ino")]
    return f"cai-{hashlib.sha256(json.dumps(version).encode()).hexdigest()[:40]}"


def upload_file(
    config: RestApiDestinationConfig, opener: Callable[[], IO[bytes]], size: int, relative_path: str, *,
    key: str | None = None, session: requests.Session | None = None, sleep: Callable[[float], Any] = time.sleep,
) -> Uploaded:
    """Send one file; return what a 2xx accepted, or raise UploadRefused / the last connection error.

    ``key`` (`idempotency_key`) goes in `config.idempotency_header` of every attempt.
    """
    http = session or requests.Session()
    url = upload_url(config, relative_path)
    last: str = ""
    keyed = {config.idempotency_header: f'"{key}"'} if key and config.idempotency_header else {}
    for attempt in range(1, config.attempts + 1):
        body, headers = build_body(config, opener, size, relative_path)
        headers = {**config.headers, **headers, **keyed, **auth_headers(config)}
        response: requests.Response | None = None
        try:
            response = http.request(config.method, url, data=body, headers=headers, auth=basic_auth(config),
                                    timeout=(config.connect_timeout, config.read_timeout), allow_redirects=False,
                                    verify=config.tls_verify())
        except requests.exceptions.SSLError as exc:  # a certificate that fails fails again: not retried
            raise UploadRefused(f"{config.method} {url}: TLS verification failed ({_ssl_reason(exc)}); set `verify` "
                                "to the CA certificate file that signed the server's certificate", None) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            with response:
                if 200 <= response.status_code < 300:
                    if body.sent != size:
                        raise UploadRefused(f"{config.method} {url} answered {response.status_code} after "
                                            f"{body.sent} of {size} bytes", response.status_code)
                    return Uploaded(body.sent, body.sha256.hexdigest(), response.status_code, attempt)
                if 300 <= response.status_code < 400:
                    raise UploadRefused(
                        f"{config.method} {url} answered HTTP {response.status_code} {response.reason} redirecting "
                        f"to `{response.headers.get('Location', '')}`; a redirect is not a delivery (redirects are "
                        f"not followed with a file): set `url` to the endpoint that stores it", response.status_code)
                reason = f"HTTP {response.status_code} {response.reason}: {response.text[:200].strip()}"
                if not _retryable(response.status_code):
                    raise UploadRefused(f"{config.method} {url} refused the file ({reason})", response.status_code)
                last = reason
        if attempt < config.attempts:
            sleep(retry_delay(response, attempt, config.retry_backoff_seconds))
    raise UploadRefused(f"{config.method} {url} failed after {config.attempts} attempts (last: {last})")


@dataclass(frozen=True)
class RestTarget:
    """A REST endpoint as a transfer target: each file uploaded, delivered only on a 2xx."""

    config: RestApiDestinationConfig
    session: requests.Session

    def location(self) -> str:
        return self.config.url

    def url(self, relative_path: str) -> str:
        safe_join(".", relative_path)  # UnsafePathError for `../` and absolute paths
        return upload_url(self.config, relative_path)

    def send(self, src_fs: AbstractFileSystem, file_url: str, relative_path: str,
             unchanged: Callable[[], None]) -> dict[str, Any]:
        self.url(relative_path)  # refuses unsafe paths before anything is read
        info = src_fs.info(file_url)
        key = idempotency_key(src_fs.unstrip_protocol(file_url), info)
        done = upload_file(self.config, lambda: open_read(src_fs, file_url), int(info["size"]),
                           relative_path, key=key, session=self.session)
        # An endpoint cannot take back what it stored: a source that changed during the upload stays, and
        # the next run sends the version it settles on, under a new idempotency key.
        unchanged()
        return {"bytes": done.bytes, "sha256": done.sha256, "verified": f"size, HTTP {done.status}",
                "attempts": done.attempts, "idempotency_key": key}
