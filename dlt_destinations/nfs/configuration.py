"""Typed config of the NFS / local folder destination (spec 6.4)."""

from __future__ import annotations

from pydantic import Field

from cai_common import BaseConfig


class NfsDestinationConfig(BaseConfig):
    """A local or NFS-mounted directory, created if missing."""

    path: str = Field(..., min_length=1, description="target directory, e.g. /mnt/nfs/destination")

    def location(self) -> str:
        """The directory."""
        return "file://" + self.path.rstrip("/")
