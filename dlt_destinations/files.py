"""A dlt destination that delivers whole files through fsspec: local/NFS folders, S3 (and SFTP next).

Its load items are small manifests (`local_path`, `file_name`, `rows`) that a resource yields after
writing a file to local disk; the destination puts each file under its root with `atomic_put`, so a
final name only ever holds a complete, size-checked file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import DestinationTerminalException, DestinationTransientException
from fsspec import AbstractFileSystem

from cai_common.files import atomic_put, safe_join
from cai_common.transfer import transfer_file


class FileDeliveryError(DestinationTerminalException):
    """A file that could not be delivered (no bucket, no permission, size mismatch); never retried."""


Delivered = Callable[[dict[str, Any]], None]
"""Called with {url, bytes, rows} for each file delivered."""


def file_destination(
    name: str, fs: AbstractFileSystem, root: str, on_delivered: Delivered, **put_kwargs: Any
) -> Destination:
    """A dlt destination putting each manifest's file at ``root/<file_name>``.

    Connection problems are transient (dlt retries the job); anything else (a path escaping the
    root, no permission, a size mismatch) fails the job for good.
    """

    def deliver(items: Any, table: Any) -> None:
        for item in items:
            final = safe_join(root, item["file_name"])
            try:
                size = atomic_put(fs, item["local_path"], final, **put_kwargs)
            except (ConnectionError, TimeoutError) as exc:
                raise DestinationTransientException(f"`{final}`: {exc}") from exc
            except Exception as exc:
                raise FileDeliveryError(f"`{final}`: {type(exc).__name__}: {exc}") from exc
            on_delivered({"url": fs.unstrip_protocol(final), "bytes": size, "rows": item["rows"]})

    factory = dlt.destination(deliver, name=name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()


def transfer_destination(
    name: str, src_fs: AbstractFileSystem, dst_fs: AbstractFileSystem, root: str, on_result: Delivered, *,
    move: bool, verify: Literal["hash", "size"], part_size: int, atomic_rename: bool = True,
) -> Destination:
    """A dlt destination copying (or moving) each manifest's file to ``root/<relative_path>``.

    Every file gets a result, {file_url, url, bytes, md5, verified, status, error}: one file failing
    does not stop the others. A moved file's source is deleted only after its copy was verified.
    """

    def deliver(items: Any, table: Any) -> None:
        for item in items:
            result: dict[str, Any] = {"file_url": item["file_url"], "url": None, "bytes": 0, "status": "failed"}
            try:
                final = safe_join(root, item["relative_path"])
                result["url"] = dst_fs.unstrip_protocol(final)
                done = transfer_file(src_fs, item["file_url"], dst_fs, final, verify=verify, part_size=part_size,
                                     atomic_rename=atomic_rename)
                result.update(bytes=done.bytes, md5=done.md5, verified=done.verified, status="copied")
                if move:
                    src_fs.rm(item["file_url"])
                    result["status"] = "moved"
            except Exception as exc:  # recorded per file; the run fails after every file was tried
                result["error"] = f"{type(exc).__name__}: {exc}"
            on_result(result)

    factory = dlt.destination(deliver, name=name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()
