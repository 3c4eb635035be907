"""A source kind and a destination kind over fsspec's in-memory filesystem, declared from the test folder alone.

Nothing in the product names them: this folder and one `register` call per side are all it takes.
"""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from pydantic import Field

from cai_common import BaseConfig, ConnectorConfigError
from cai_common.kinds import DestinationKind, Probe, SourceKind
from dlt_destinations.writer import FileTarget
from dlt_sources.filesystem import FileSourceOptions


class MemorySourceConfig(FileSourceOptions):
    """Files under a folder of the process's in-memory filesystem."""

    folder: str = Field(..., min_length=1, description="folder in memory, e.g. incoming")

    def bucket_url(self) -> str:
        return f"memory://{self.folder.strip('/')}"

    def location(self) -> str:
        return self.bucket_url()

    def open_filesystem(self) -> AbstractFileSystem:
        return fsspec.filesystem("memory")

    def ensure_location(self, fs: AbstractFileSystem, connector_id: int | None = None) -> None:
        if not fs.isdir(f"/{self.folder.strip('/')}"):
            raise ConnectorConfigError(connector_id, "source", "folder", f"`{self.folder}` does not exist in memory")


class MemoryDestinationConfig(BaseConfig):
    """A folder of the in-memory filesystem."""

    folder: str = Field(..., min_length=1, description="folder in memory, e.g. outgoing")

    def location(self) -> str:
        return f"memory://{self.folder.strip('/')}"


def _probe_folder(folder: str) -> Probe:
    return Probe(f"memory://{folder}", lambda: "in memory")


def _file_target(config: MemoryDestinationConfig) -> FileTarget:
    return FileTarget("memory", fsspec.filesystem("memory"), f"/{config.folder.strip('/')}")


def _source_probe(config: Any) -> Probe:
    return _probe_folder(config.folder)


def _destination_probe(config: Any) -> Probe:
    return _probe_folder(config.folder)


SOURCE = SourceKind(code="memory_files", config=MemorySourceConfig, yields="files",
                    description="Files in the process's memory (a test kind)", probe=_source_probe,
                    aliases=("ram_files",))
DESTINATION = DestinationKind(code="memory_folder", config=MemoryDestinationConfig, accepts=frozenset({"files"}),
                              description="A folder in the process's memory (a test kind)",
                              probe=_destination_probe, file_target=_file_target)
