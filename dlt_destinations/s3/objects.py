"""S3 objects: one streaming GET per object, and server-side copies between prefixes of one endpoint."""

from __future__ import annotations

from typing import Any

from fsspec import AbstractFileSystem


def _endpoint(fs: Any) -> tuple[Any, ...]:
    return (fs.client_kwargs.get("endpoint_url"), fs.key)


def copy_within(dst_fs: Any) -> Any:
    """The `FileTarget.copy_within` of an S3 destination: a server-side copy when the source is an
    S3 filesystem on the same endpoint with the same key (no bytes through this process)."""

    def copy(src_fs: AbstractFileSystem, src_path: str, final_path: str) -> bool:
        if getattr(src_fs, "open_stream", None) is None or not hasattr(src_fs, "client_kwargs"):
            return False
        if _endpoint(src_fs) != _endpoint(dst_fs):
            return False
        dst_fs.copy(src_path, final_path)
        return True

    return copy


class S3ObjectStream:
    """A whole S3 object read through one streaming GET, in pieces of the caller's size.

    s3fs's file objects send a ranged GET per read; one request per object is cheaper on every S3
    (and on moto, whose ranged GETs cost time in proportion to the object's size). The response's
    Content-Length is checked at the end by aiobotocore.
    """

    def __init__(self, fs: Any, path: str) -> None:
        from fsspec.asyn import sync

        self._sync, self._loop = sync, fs.loop
        bucket, key, version = fs.split_path(path)
        response = sync(fs.loop, fs._call_s3, "get_object", Bucket=bucket, Key=key,
                        **({"VersionId": version} if version else {}))
        self._body = response["Body"]

    def read(self, size: int) -> bytes:
        async def fill() -> bytes:
            pieces, got = [], 0
            while got < size and (piece := await self._body.read(size - got)):
                pieces.append(piece)
                got += len(piece)
            return b"".join(pieces)

        return bytes(self._sync(self._loop, fill))

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> S3ObjectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
