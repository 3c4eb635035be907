"""The `filesystem` source kind: files of a local or NFS-mounted folder."""

from __future__ import annotations

import os
from typing import Any

from cai_common.kinds import Probe, SourceKind
from cai_common.probes import folder_access
from dlt_sources.filesystem.configuration import FilesystemSourceConfig


def probe(config: FilesystemSourceConfig) -> Probe:
    """The folder exists and can be read."""
    return Probe(config.path, lambda: folder_access(config.path, must_exist=True))


def from_url(base: str) -> dict[str, Any]:
    """A local path (or `file://` URL) -> the config's location field, made absolute."""
    return {"path": os.path.abspath(base.removeprefix("file://"))}


KIND = SourceKind(code="filesystem", config=FilesystemSourceConfig, yields="files",
                  description="Local or NFS-mounted folder", probe=probe, url_schemes=("", "file"), from_url=from_url)
