"""The `nfs` destination kind: a local or NFS-mounted folder, written through fsspec's local filesystem."""

from __future__ import annotations

import fsspec

from cai_common.kinds import DestinationKind, Probe
from cai_common.probes import folder_access
from dlt_destinations.nfs.configuration import NfsDestinationConfig
from dlt_destinations.writer import FileTarget


def file_target(config: NfsDestinationConfig) -> FileTarget:
    """The folder: temp name, fsync, rename."""
    return FileTarget("nfs", fsspec.filesystem("file"), config.path.rstrip("/") or "/")


def probe(config: NfsDestinationConfig) -> Probe:
    """The folder is writable, or can be created."""
    return Probe(config.path, lambda: folder_access(config.path, must_exist=False))


KIND = DestinationKind(
    code="nfs", config=NfsDestinationConfig, accepts=frozenset({"files"}), description="Local or NFS-mounted folder",
    aliases=("filesystem", "local"), probe=probe, file_target=file_target,
)
