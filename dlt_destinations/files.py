"""A dlt destination that delivers whole files through fsspec: local/NFS folders, S3 (and SFTP next).

Its load items are small manifests (`local_path`, `file_name`, `rows`) that a resource yields after
writing a file to local disk; the destination puts each file under its root with `atomic_put`, so a
final name only ever holds a complete, size-checked file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import DestinationTerminalException, DestinationTransientException
from fsspec import AbstractFileSystem

from cai_common.files import atomic_put, safe_join


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
