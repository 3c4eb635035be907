"""Which listed files are ready to take, and whether a file is still the one that was taken.

Producers write straight into the folders this product reads. A file is taken only once it is
ready: its size, modification time and identity (inode, or ETag on S3) unchanged for
`settle_seconds`, or, where producers write markers, once its `ready_marker` exists and is no older
than the file. A file that is not ready is left for the next run, never read.

Settling costs no wait for files last modified longer ago than `settle_seconds` (by this worker's
clock). Younger files, and files whose modification time is in the future (a server clock ahead of
the worker's), are observed again once they could have settled, at most `settle_seconds` after the
listing, and taken only if nothing about them changed in between. Local and NFS files are observed
through an open descriptor: opening makes an NFS client ask the server for the file's attributes
(close-to-open consistency) instead of answering from its attribute cache.

Whatever readiness says, the file's fingerprint (`cai_common.file_versions`) is checked again around
every copy that may delete a source (`dlt_destinations.files`) and every CSV staged for a load: a
file that changed while it was read is not taken.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dlt.common.storages.fsspec_filesystem import FileItemDict
from fsspec import AbstractFileSystem

from cai_common.file_versions import (
    Fingerprint,
    fingerprint_of,
    fs_path,
    is_local,
    observe,
    same_version,
    scheme_of,
)

_PLACEHOLDER = re.compile(r"\{(name|stem)\}")


@dataclass(frozen=True)
class Readiness:
    """When a listed file may be taken (a file source's `settle_seconds` and `ready_marker`)."""

    settle_seconds: float
    ready_marker: str | None = None

    @property
    def per_file(self) -> bool:
        """The marker names one file (`{name}.done`), not the whole folder (`_SUCCESS`)."""
        return self.ready_marker is not None and _PLACEHOLDER.search(self.ready_marker) is not None

    def marker_for(self, file_name: str) -> str | None:
        """The marker's name beside ``file_name``, or None without markers."""
        if self.ready_marker is None:
            return None
        stem = file_name.split(".", 1)[0] if not file_name.startswith(".") else file_name
        return _PLACEHOLDER.sub(lambda m: file_name if m[1] == "name" else stem, self.ready_marker)

    def is_marker(self, file_name: str) -> bool:
        """Whether ``file_name`` is a marker itself (markers are never transferred or loaded)."""
        if self.ready_marker is None:
            return False
        if not self.per_file:
            return file_name == self.ready_marker
        pattern = "".join("(.+)" if part in ("{name}", "{stem}") else re.escape(part)
                          for part in re.split(r"(\{name\}|\{stem\})", self.ready_marker))
        return re.fullmatch(pattern, file_name) is not None


@dataclass(frozen=True)
class Taken:
    """A file that is ready, with the fingerprint it had when it was found ready."""

    file: FileItemDict
    fingerprint: Fingerprint
    marker_url: str | None = None
    """Its per-file marker, removed with a moved file (a folder marker stays: it speaks for others)."""


@dataclass
class NotReady:
    """A file left for the next run, and why (in words about the file, never its content)."""

    file_url: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Plain dict for JSON metrics."""
        return {"file_url": self.file_url, "reason": self.reason}


@dataclass
class _Seen:
    file: FileItemDict
    fingerprint: Fingerprint | None
    marker_url: str | None = None


def listed(file: FileItemDict) -> Fingerprint:
    """What the listing said of a file (no identity: dlt's listing keeps none)."""
    return Fingerprint(file["size_in_bytes"], file["modification_date"], None)


@dataclass
class ReadyFiles:
    """Sorts listed files into ready and not ready; one per resource, across dlt's pages of files."""

    fs: AbstractFileSystem
    readiness: Readiness
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Any] = time.sleep
    not_ready: list[NotReady] = field(default_factory=list)

    def take(self, files: Iterable[FileItemDict]) -> list[Taken]:
        """The ready files of one page of a listing, in listing order; the rest go to `not_ready`."""
        settle = self.readiness.settle_seconds
        # Local files are observed anyway (cheap, and it gives the inode); an object store only when
        # readiness asks, as each observation is a request.
        observed = settle > 0 or is_local(self.fs)
        seen = [_Seen(f, observe(self.fs, f["file_url"]) if observed else listed(f)) for f in files
                if not self.readiness.is_marker(f["file_name"])]
        markers = self._markers(seen) if self.readiness.ready_marker else {}
        now = self.clock()
        waiting: list[tuple[int, _Seen]] = []
        ready: dict[int, Taken] = {}
        for index, item in enumerate(seen):
            fp = item.fingerprint
            if fp is None:
                continue  # gone since the listing (another run moved it): nothing to take, nothing left behind
            if self.readiness.ready_marker is not None:
                problem, item.marker_url = self._marker_problem(item, markers)
                if problem:
                    self.not_ready.append(NotReady(item.file["file_url"], problem))
                    continue
            young = fp.modified is None or now - fp.modified.timestamp() < settle
            if settle > 0 and (young or not same_version(listed(item.file), fp)):
                waiting.append((index, item))
                continue
            ready[index] = self._taken(item, fp)
        if waiting:
            # Until each could have settled, at most `settle` from now (a modification time in the future
            # is a server clock ahead of this one: the file must then stay unchanged for the whole wait).
            ends = [fp.modified.timestamp() + settle if (fp := item.fingerprint) and fp.modified else now + settle
                    for _, item in waiting]
            self.sleep(max(0.0, min(now + settle, max(ends)) - now))
            for index, item in waiting:
                before = item.fingerprint
                assert before is not None
                again = observe(self.fs, item.file["file_url"])
                if again is None:
                    continue
                if again != before:
                    reason = f"still being written ({before.difference(again)} within {settle:g} s)"
                    self.not_ready.append(NotReady(item.file["file_url"], reason))
                    continue
                ready[index] = self._taken(item, again)
        return [ready[i] for i in sorted(ready)]

    def _taken(self, item: _Seen, fingerprint: Fingerprint) -> Taken:
        return Taken(item.file, fingerprint, item.marker_url if self.readiness.per_file else None)

    def _markers(self, seen: list[_Seen]) -> dict[str, Fingerprint]:
        """URL -> fingerprint of every marker the files' folders hold (one listing per folder)."""
        found: dict[str, Fingerprint] = {}
        scheme = scheme_of(self.fs)
        for parent in {posixpath.dirname(fs_path(self.fs, s.file["file_url"])) for s in seen}:
            path = self.fs._strip_protocol(parent)
            try:
                self.fs.invalidate_cache(path)
                entries = self.fs.ls(path, detail=True)
            except FileNotFoundError:
                continue
            for entry in entries:
                name = posixpath.basename(str(entry["name"]).rstrip("/"))
                if entry.get("type") == "file" and self.readiness.is_marker(name):
                    found[posixpath.join(parent, name)] = fingerprint_of(entry, scheme)
        return found

    def _marker_problem(self, item: _Seen, markers: dict[str, Fingerprint]) -> tuple[str | None, str | None]:
        """(why the file is not ready by its marker or None, the marker's URL)."""
        name = self.readiness.marker_for(item.file["file_name"])
        assert name is not None and item.fingerprint is not None
        url = posixpath.join(posixpath.dirname(fs_path(self.fs, item.file["file_url"])), name)
        marker = markers.get(url)
        if marker is None:
            return f"waiting for its ready marker `{name}`", url
        if marker.modified and item.fingerprint.modified and marker.modified < item.fingerprint.modified:
            # A marker older than the file speaks for an earlier version (or an earlier batch in the folder).
            return f"modified after its ready marker `{name}` was written", url
        return None, url
