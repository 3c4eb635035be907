"""REST uploads against a real local HTTP server: bodies, auth, retries, refusals."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import pytest

from dlt_destinations.rest_api import RestApiDestinationConfig, UploadRefused, upload_file
from dlt_destinations.rest_api.client import idempotency_key

DATA = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, not a multiple of the chunk size


def _config(url: str, **extra: Any) -> RestApiDestinationConfig:
    return RestApiDestinationConfig.model_validate({"url": url, "retry_backoff_seconds": 0.01, **extra})


def _opener(data: bytes = DATA) -> Any:
    return lambda: io.BytesIO(data)


def test_multipart_sends_the_fields_then_the_file_streamed_with_its_length(upload_server: Any) -> None:
    config = _config(upload_server.url, auth_type="bearer_token", token="tok-123", file_field_name="upload",
                     additional_fields={"projectName": "PROJ1", "subdirectory": "incoming"},
                     content_type="text/csv", headers={"X-Custom-Header": "value"})
    done = upload_file(config, _opener(), len(DATA), "2024/labs.csv")
    [upload] = upload_server.uploads
    assert upload["method"] == "POST"
    assert upload["form"] == {"projectName": "PROJ1", "subdirectory": "incoming"}
    assert upload["files"] == {"upload": ("2024/labs.csv", "text/csv", DATA)}
    assert upload["headers"]["Authorization"] == "Bearer tok-123"
    assert upload["headers"]["X-Custom-Header"] == "value"
    assert int(upload["headers"]["Content-Length"]) > len(DATA)  # known length, not chunked
    assert "Transfer-Encoding" not in upload["headers"]
    expected = (len(DATA), hashlib.sha256(DATA).hexdigest(), 201, 1)
    assert (done.bytes, done.sha256, done.status, done.attempts) == expected


def test_raw_body_put_with_an_api_key_and_the_file_name_in_the_url(upload_server: Any) -> None:
    config = _config(upload_server.url.replace("/upload", "/files/{file_name}"), method="PUT",
                     use_multipart=False, auth_type="api_key", api_key="key-9", api_key_header="X-Api-Key",
                     content_type="application/pdf")
    upload_file(config, _opener(), len(DATA), "scans/report 1.pdf")
    [upload] = upload_server.uploads
    assert (upload["method"], upload["path"]) == ("PUT", "/files/report 1.pdf")
    assert upload["body"] == DATA
    assert upload["headers"]["Content-Type"] == "application/pdf"
    assert upload["headers"]["Content-Length"] == str(len(DATA))
    assert upload["headers"]["X-Api-Key"] == "key-9"
    assert 'filename="scans/report 1.pdf"' in upload["headers"]["Content-Disposition"]


def test_basic_auth(upload_server: Any) -> None:
    config = _config(upload_server.url, auth_type="basic", username="clinic", password="s3cr:t")
    upload_file(config, _opener(b"a,b\n"), 4, "x.csv")
    header = upload_server.uploads[0]["headers"]["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == b"clinic:s3cr:t"


def test_a_server_failing_twice_then_accepting_gets_three_attempts_with_growing_backoff(upload_server: Any) -> None:
    upload_server.answers = [(503, {}), (429, {})]
    delays: list[float] = []
    config = _config(upload_server.url, retry_backoff_seconds=0.5)
    done = upload_file(config, _opener(), len(DATA), "a.bin", sleep=delays.append)
    assert done.attempts == 3 and len(upload_server.uploads) == 3
    assert all(u["files"]["file"][2] == DATA for u in upload_server.uploads)  # the whole file every time
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 1.5  # 0.5 * 2^n plus up to 0.5 of jitter


def test_every_attempt_carries_the_same_idempotency_key(upload_server: Any) -> None:
    upload_server.answers = [(503, {}), (503, {})]
    upload_file(_config(upload_server.url), _opener(), len(DATA), "a.bin", key="cai-abc", sleep=lambda s: None)
    assert [u["headers"]["Idempotency-Key"] for u in upload_server.uploads] == ['"cai-abc"'] * 3

    upload_file(_config(upload_server.url, idempotency_header="X-Request-Id"), _opener(), len(DATA), "a.bin",
                key="cai-def")
    upload_file(_config(upload_server.url, idempotency_header=None), _opener(), len(DATA), "a.bin", key="cai-ghi")
    renamed, dropped = upload_server.uploads[3:]
    assert renamed["headers"]["X-Request-Id"] == '"cai-def"' and "Idempotency-Key" not in renamed["headers"]
    assert not {"Idempotency-Key", "X-Request-Id"} & set(dropped["headers"])


def test_an_idempotency_key_names_one_version_of_one_file(tmp_path: Any) -> None:
    import fsspec

    local = fsspec.filesystem("file")
    path = tmp_path / "labs.csv"
    path.write_bytes(b"id\n1\n")
    url = local.unstrip_protocol(str(path))
    first = idempotency_key(url, local.info(str(path)))
    assert first is not None and first == idempotency_key(url, local.info(str(path)))
    os.utime(path, (1_700_000_000.5, 1_700_000_000.5))  # rewritten: same size, another time
    path.write_bytes(b"id\n2\n")
    os.utime(path, (1_700_000_000.5, 1_700_000_000.5))
    second = idempotency_key(url, local.info(str(path)))
    assert second not in (None, first)
    moved_over = tmp_path / "new.csv"  # the same bytes and time, written elsewhere and renamed over it
    moved_over.write_bytes(b"id\n2\n")
    os.utime(moved_over, (1_700_000_000.5, 1_700_000_000.5))
    moved_over.rename(path)
    assert idempotency_key(url, local.info(str(path))) not in (None, first, second)
    assert idempotency_key("ftp://h/a.csv", {"size": 4}) is None  # no version to tell: no key


def test_retry_after_is_honoured(upload_server: Any) -> None:
    upload_server.answers = [(503, {"Retry-After": "7"})]
    delays: list[float] = []
    upload_file(_config(upload_server.url), _opener(b"x"), 1, "a.txt", sleep=delays.append)
    assert delays == [7.0]


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0), ("0", 0.0), ("-5", 0.0), ("100000", 300.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ("soon", None), ("NaN", None), ("inf", None), ("", None), ("Mon, 99 Foo 20xx", None),
])
def test_a_retry_after_of_any_shape_gives_a_wait_the_retry_loop_can_take(header: str, expected: float | None) -> None:
    """Delay-seconds, an HTTP date, or anything a misbehaving server sends: a finite wait within the cap,
    or None (the backoff applies) — never an exception out of the retry loop."""
    from dlt_destinations.rest_api.client import retry_after

    assert retry_after(header) == expected


def test_a_malformed_retry_after_falls_back_to_the_backoff_and_the_file_is_delivered(upload_server: Any) -> None:
    upload_server.answers = [(503, {"Retry-After": "soon"}), (429, {"Retry-After": "Mon, 99 Foo 20xx"})]
    delays: list[float] = []
    done = upload_file(_config(upload_server.url, retry_backoff_seconds=0.5), _opener(b"x"), 1, "a.txt",
                       sleep=delays.append)
    assert done.attempts == 3 and len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 1.5  # backoff * 2^n plus up to one backoff of jitter


def test_a_server_that_always_fails_is_tried_three_times(upload_server: Any) -> None:
    upload_server.answers = [(500, {})] * 5
    with pytest.raises(UploadRefused, match="failed after 3 attempts .*HTTP 500"):
        upload_file(_config(upload_server.url), _opener(b"x"), 1, "a.txt", sleep=lambda s: None)
    assert len(upload_server.uploads) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_a_client_error_fails_at_once(upload_server: Any, status: int) -> None:
    upload_server.answers = [(status, {})]
    with pytest.raises(UploadRefused, match=f"refused the file \\(HTTP {status}") as caught:
        upload_file(_config(upload_server.url), _opener(b"x"), 1, "a.txt", sleep=lambda s: None)
    assert caught.value.status == status and len(upload_server.uploads) == 1


def test_connection_errors_are_retried_then_reported() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    delays: list[float] = []
    with pytest.raises(UploadRefused, match="failed after 3 attempts .*ConnectionError"):
        upload_file(_config(f"http://127.0.0.1:{port}/upload"), _opener(b"x"), 1, "a.txt", sleep=delays.append)
    assert len(delays) == 2


def test_auth_fields_are_required_by_auth_type() -> None:
    from cai_common import ConnectorConfigError

    with pytest.raises(ConnectorConfigError, match="connector 4.*`token`.*required when `auth_type` is `bearer_token`"):
        RestApiDestinationConfig.parse({"url": "http://h/u", "auth_type": "bearer_token"}, connector_id=4,
                                       side="destination")
    with pytest.raises(ConnectorConfigError, match="`password`.*required when `auth_type` is `basic`"):
        RestApiDestinationConfig.parse({"url": "http://h/u", "auth_type": "basic", "username": "u"}, connector_id=4,
                                       side="destination")
