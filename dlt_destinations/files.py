"""dlt destinations that deliver whole files: local/NFS folders, S3 and SFTP through fsspec, REST uploads.

`file_destination` takes manifests (`local_path`, `file_name`, `rows`) of files a resource wrote to
local disk (query exports) and puts each under its root with `atomic_put`. `transfer_destination`
takes manifests of source files (`file_url`, `relative_path`) and sends each to a `TransferTarget`
(a filesystem, or a REST endpoint). Either way a final name only ever holds a complete, verified file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import DestinationTerminalException, DestinationTransientException
from fsspec import AbstractFileSystem

from cai_common.files import atomic_put, safe_join
from cai_common.transfer import PART_SIZE, DebrisSweeper, is_object_store, transfer_file


class FileDeliveryError(DestinationTerminalException):
    """A file that could not be delivered (no bucket, no permission, size mismatch); never retried."""


Delivered = Callable[[dict[str, Any]], None]
"""Called with {url, bytes, rows, sha256} for each file delivered."""


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
            if size != item["bytes"]:
                raise FileDeliveryError(f"`{final}`: delivered {size} bytes, the export wrote {item['bytes']}")
            on_delivered({"url": fs.unstrip_protocol(final), "bytes": size, "rows": item["rows"],
                          "sha256": item.get("sha256")})

    factory = dlt.destination(deliver, name=name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()


class TransferTarget(Protocol):
    """Where a transfer puts files: a URL for each relative path, and a verified send."""

    def location(self) -> str:
        """Where files go, for summaries (a root URL or the endpoint)."""
        ...

    def url(self, relative_path: str) -> str:
        """The file's URL at the destination (raises UnsafePathError for paths escaping the root)."""
        ...

    def send(self, src_fs: AbstractFileSystem, file_url: str, relative_path: str) -> dict[str, Any]:
        """Deliver one file; return {bytes, sha256, verified}, or raise: nothing is then left at the destination."""
        ...


@dataclass(frozen=True)
class FilesystemTarget:
    """A folder, S3 prefix or SFTP directory, written by `transfer_file` (temp + rename or multipart)."""

    fs: AbstractFileSystem
    root: str
    verify: Literal["hash", "size"] = "hash"
    part_size: int = PART_SIZE
    atomic_rename: bool = True
    reopen: Callable[[], AbstractFileSystem] | None = None
    """A new connection to the destination (removing a dropped session's partial file)."""
    debris: DebrisSweeper = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "debris", DebrisSweeper(self.fs))

    def location(self) -> str:
        return str(self.fs.unstrip_protocol(self.root))

    def url(self, relative_path: str) -> str:
        return str(self.fs.unstrip_protocol(safe_join(self.root, relative_path)))

    def send(self, src_fs: AbstractFileSystem, file_url: str, relative_path: str) -> dict[str, Any]:
        final = safe_join(self.root, relative_path)
        if not is_object_store(self.fs):  # an object store shows nothing before an upload completes
            self.debris.clear_for(final)
        done = transfer_file(src_fs, file_url, self.fs, final, verify=self.verify, part_size=self.part_size,
                             atomic_rename=self.atomic_rename, reopen=self.reopen)
        return {"bytes": done.bytes, "sha256": done.sha256, "verified": done.verified}


def transfer_destination(
    name: str, src_fs: AbstractFileSystem, target: TransferTarget, on_result: Delivered, *, move: bool,
) -> Destination:
    """A dlt destination copying (or moving) each manifest's file to the target, at its relative path.

    Every file gets a result, {file_url, url, bytes, sha256, verified, status, error}: one file failing
    does not stop the others. A moved file's source is deleted only after its copy was verified.
    """

    def deliver(items: Any, table: Any) -> None:
        for item in items:
            result: dict[str, Any] = {"file_url": item["file_url"], "url": None, "bytes": 0, "status": "failed"}
            try:
                result["url"] = target.url(item["relative_path"])
                result.update(target.send(src_fs, item["file_url"], item["relative_path"]), status="copied")
                if move:
                    src_fs.rm(item["file_url"])
                    result["status"] = "moved"
            except Exception as exc:  # recorded per file; the run fails after every file was tried
                result["error"] = f"{type(exc).__name__}: {exc}"
            on_result(result)

    factory = dlt.destination(deliver, name=name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()
