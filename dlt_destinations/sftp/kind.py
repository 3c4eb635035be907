"""The `sftp` destination kind: a directory on an SFTP server (TrueNAS), host key verified."""

from __future__ import annotations

from cai_common.kinds import DestinationKind, Probe
from dlt_destinations.sftp.configuration import SftpDestinationConfig
from dlt_destinations.writer import FileTarget


def file_target(config: SftpDestinationConfig) -> FileTarget:
    """The directory over sshfs; a dropped session's partial file is removed over a new one, and a
    copy is hashed by the server itself where the login may run `openssl` or `sha256sum` (else read back)."""
    from dlt_destinations.sftp.client import open_sftp

    fs = open_sftp(config)
    return FileTarget("sftp", fs, config.path.rstrip("/") or "/", atomic_rename=config.atomic_rename,
                      reopen=lambda: open_sftp(config), remote_sha256=fs.remote_sha256)


def probe(config: SftpDestinationConfig) -> Probe:
    """The server accepts the login with a known host key; the directory exists or will be created."""

    def check() -> str:
        from dlt_destinations.sftp.client import open_sftp

        fs = open_sftp(config)
        return "login OK, " + ("directory present" if fs.exists(config.path) else "directory will be created")

    return Probe(f"sftp://{config.username}@{config.host}:{config.port}{config.path}", check)


KIND = DestinationKind(
    code="sftp", config=SftpDestinationConfig, accepts=frozenset({"files"}), description="SFTP server directory",
    aliases=("truenas",), probe=probe, file_target=file_target,
)
