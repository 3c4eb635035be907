"""File transfer sources: one small manifest per matched file, for a file-moving dlt destination.

In copy mode the manifests of files already delivered unchanged are left out (the caller passes the
ledger of delivered versions, which the data path keeps in the config store), so a re-run sends
nothing twice. Move mode needs no ledger: a moved file is gone from the source. Only files that are
ready (`readiness`) are listed for transfer: a file a producer is still writing waits for the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dlt
from dlt.common.storages.fsspec_filesystem import FileItemDict
from dlt.extract.resource import DltResource
from dlt.sources.filesystem import filesystem
from fsspec import AbstractFileSystem

from cai_common.file_versions import fs_path
from dlt_sources.filesystem.readiness import Readiness, ReadyFiles
from dlt_sources.filesystem.reports import ReadReport, stamp

MANIFESTS = "file_manifests"


def file_manifests(
    bucket_url: str, file_glob: str, *, fs: AbstractFileSystem, report: ReadReport,
    delivered: Mapping[str, Any] | None, readiness: Readiness,
) -> DltResource:
    """A dlt resource yielding {file_url, source_path (as ``fs`` opens it), relative_path, size, modified,
    fingerprint, marker_url} for every
    file to transfer that is ready (`readiness`); the others are left for the next run in ``report.not_ready``.

    ``fingerprint`` (JSON) is the file's size, modification time and identity when it was found ready:
    the destination checks the file against it around the copy and deletes nothing that differs.
    ``delivered`` (file URL -> stamp) lists the versions copied already; those are left out.
    """
    listing = filesystem(bucket_url=bucket_url, credentials=fs, file_glob=file_glob)
    ready = ReadyFiles(fs, readiness, not_ready=report.not_ready)

    def manifests(files: list[FileItemDict]) -> Iterator[dict[str, Any]]:
        fresh = []
        for file in files:
            if delivered is not None and delivered.get(file["file_url"]) == stamp(file):
                report.unchanged += 1
                continue
            fresh.append(file)
        for taken in ready.take(fresh):
            file = taken.file
            report.stamps[file["file_url"]] = version = taken.fingerprint.stamp()
            yield {"file_url": file["file_url"], "source_path": fs_path(fs, file["file_url"]),
                   "relative_path": file["relative_path"],
                   "size": taken.fingerprint.size, "modified": version["modified"],
                   "fingerprint": json.dumps(taken.fingerprint.as_dict()), "marker_url": taken.marker_url}

    # Declared: a run where no file has a marker would leave the column untyped (and dlt warns of it).
    columns = {"marker_url": {"data_type": "text", "nullable": True}}
    return listing | dlt.transformer(name=MANIFESTS, columns=columns)(manifests)  # type: ignore[arg-type]
