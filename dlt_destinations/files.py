"""dlt destinations that deliver whole files: to an fsspec `FileTarget`, or to an upload endpoint.

`file_destination` takes manifests (`local_path`, `file_name`, `rows`) of files a resource wrote to
local disk (query exports) and writes each under its `FileTarget`'s root. `transfer_destination`
takes manifests of source files (`file_url`, `relative_path`) and sends each to a `TransferTarget`
(a `FileTarget`, or an upload endpoint). Either way `writer.write_file` writes, so a final name only
ever holds a complete, verified file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import dlt
import fsspec
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import DestinationTerminalException, DestinationTransientException
from fsspec import AbstractFileSystem

from cai_common import CaiError, is_transient
from cai_common.file_versions import Fingerprint, SourceChanged, guard, observe, same_version
from dlt_destinations.writer import DebrisSweeper, FileTarget, safe_join, write_file


class FileDeliveryError(CaiError, DestinationTerminalException):
    """A file that could not be delivered (no bucket, no permission, size mismatch); never retried."""


Delivered = Callable[[dict[str, Any]], None]
"""Called with {url, bytes, rows, sha256} for each file delivered."""


def file_destination(target: FileTarget, on_delivered: Delivered) -> Destination:
    """A dlt destination writing each manifest's file at ``root/<file_name>`` of the target.

    Connection problems are transient (dlt retries the job); anything else (a path escaping the
    root, no permission, a size mismatch) fails the job for good.
    """
    local = fsspec.filesystem("file")

    def deliver(items: Any, table: Any) -> None:
        for item in items:
            final = safe_join(target.root, item["file_name"])
            try:
                done = write_file(local, item["local_path"], target, final, verify="size", link=True)
            except Exception as exc:
                if is_transient(exc):  # a dropped connection: dlt retries the job
                    raise DestinationTransientException(f"`{final}`: {exc}") from exc
                raise FileDeliveryError(f"`{final}`: {type(exc).__name__}: {exc}") from exc
            if done.bytes != item["bytes"]:
                raise FileDeliveryError(f"`{final}`: delivered {done.bytes} bytes, the export wrote {item['bytes']}")
            on_delivered({"url": target.fs.unstrip_protocol(final), "bytes": done.bytes, "rows": item["rows"],
                          "sha256": item.get("sha256")})

    factory = dlt.destination(deliver, name=target.name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()


class TransferTarget(Protocol):
    """Where a transfer puts files: a URL for each relative path, and a verified send."""

    def location(self) -> str:
        """Where files go, for summaries (a root URL or the endpoint)."""
        ...

    def url(self, relative_path: str) -> str:
        """The file's URL at the destination (raises UnsafePathError for paths escaping the root)."""
        ...

    def send(self, src_fs: AbstractFileSystem, file_url: str, relative_path: str,
             unchanged: Callable[[], None]) -> dict[str, Any]:
        """Deliver one file; return {bytes, sha256, verified}, or raise: nothing is then left at the destination.

        ``unchanged`` raises `SourceChanged` when the source is no longer the file that was taken: call it
        once every byte was read, before the file can appear under its final name, and again after.
        """
        ...


@dataclass(frozen=True)
class FilesystemTarget:
    """A `FileTarget` as a transfer target: each file written by `write_file` (temp + rename or multipart)."""

    target: FileTarget
    verify: Literal["hash", "size"] = "hash"
    debris: DebrisSweeper = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "debris", DebrisSweeper(self.target.fs))

    def location(self) -> str:
        return self.target.location()

    def url(self, relative_path: str) -> str:
        return str(self.target.fs.unstrip_protocol(safe_join(self.target.root, relative_path)))

    def send(self, src_fs: AbstractFileSystem, file_url: str, relative_path: str,
             unchanged: Callable[[], None]) -> dict[str, Any]:
        final = safe_join(self.target.root, relative_path)
        if not self.target.object_store:  # an object store shows nothing before an upload completes
            self.debris.clear_for(final)
        done = write_file(src_fs, file_url, self.target, final, verify=self.verify, before_commit=unchanged)
        try:
            unchanged()
        except SourceChanged:  # written to after the last look before the name: the copy is not that file
            self.target.fs.rm(final)
            raise
        return {"bytes": done.bytes, "sha256": done.sha256, "verified": done.verified}


def transfer_destination(
    name: str, src_fs: AbstractFileSystem, target: TransferTarget, on_result: Delivered, *, move: bool,
) -> Destination:
    """A dlt destination copying (or moving) each manifest's file to the target, at its relative path.

    Every file gets a result, {file_url, url, bytes, sha256, verified, status, error}: one file failing
    does not stop the others. A moved file's source is deleted only after its copy was verified, and
    only if it is still the file that was taken: its size, modification time and identity (inode,
    ETag) the same from before the copy began to after its verification (`readiness.guard`).
    Otherwise the copy is discarded, the source stays, and the status is ``changed``: the file is
    left for the next run. A moved file's own ready marker (`{name}.done`) goes with it.
    """

    def deliver(items: Any, table: Any) -> None:
        for item in items:
            url = item.get("source_path") or item["file_url"]
            result: dict[str, Any] = {"file_url": item["file_url"], "url": None, "bytes": 0, "status": "failed"}
            try:
                result["url"] = target.url(item["relative_path"])
                before = observe(src_fs, url)
                taken = Fingerprint.from_dict(json.loads(item["fingerprint"])) if item.get("fingerprint") else before
                if before is None or taken is None or not same_version(taken, before):
                    raise SourceChanged(url, taken or before or Fingerprint(None, None, None), before)
                result.update(target.send(src_fs, url, item["relative_path"], guard(src_fs, url, before)),
                              status="copied")
                if move:
                    src_fs.rm(url)
                    result["status"] = "moved"
                    if item.get("marker_url"):
                        with contextlib.suppress(FileNotFoundError):
                            src_fs.rm(item["marker_url"])
            except SourceChanged as exc:  # not an error of the run: the file waits for the next one
                result.update(status="changed", error=str(exc), bytes=0)
            except Exception as exc:  # recorded per file; the run fails after every file was tried
                result["error"] = f"{type(exc).__name__}: {exc}"
            on_result(result)

    factory = dlt.destination(deliver, name=name, batch_size=1, loader_file_format="typed-jsonl")
    return factory()
