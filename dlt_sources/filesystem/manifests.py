"""File transfer sources: one small manifest per matched file, for a file-moving dlt destination.

In copy mode the manifests of files already transferred unchanged are left out (the same ledger in
dlt's resource state as CSV loading), so a re-run sends nothing twice. Move mode needs no ledger:
a moved file is gone from the source. The ledger is only read here: a file enters it once its copy
was delivered and verified (`flows.paths.pipelines.remember_files`), so a run that dies between listing
and delivering leaves nothing marked as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dlt
from dlt.common.storages.fsspec_filesystem import FileItemDict
from dlt.extract.resource import DltResource
from dlt.sources.filesystem import filesystem
from fsspec import AbstractFileSystem

from dlt_sources.filesystem.reports import LEDGER_KEY, ReadReport, stamp

MANIFESTS = "file_manifests"


def file_manifests(
    bucket_url: str, file_glob: str, *, fs: AbstractFileSystem, report: ReadReport, skip_unchanged: bool,
) -> DltResource:
    """A dlt resource yielding {file_url, relative_path, size, modified} for every file to transfer."""
    listing = filesystem(bucket_url=bucket_url, credentials=fs, file_glob=file_glob)

    def manifests(files: list[FileItemDict]) -> Iterator[dict[str, Any]]:
        ledger: dict[str, Any] = dlt.current.resource_state().setdefault(LEDGER_KEY, {})
        for file in files:
            version = stamp(file)
            if skip_unchanged and ledger.get(file["file_url"]) == version:
                report.unchanged += 1
                continue
            report.stamps[file["file_url"]] = version
            yield {"file_url": file["file_url"], "relative_path": file["relative_path"],
                   "size": file["size_in_bytes"], "modified": version["modified"]}

    return listing | dlt.transformer(name=MANIFESTS)(manifests)
