"""The SFTP connection (sshfs over asyncssh), with the server's host key always verified.

Host keys are checked against `known_hosts` (the config's file, else ~/.ssh/known_hosts), read by
asyncssh's own OpenSSH-compatible matching: plain, hashed (`|1|...`) and multi-name entries,
`@revoked` and `@cert-authority` markers. With `host_key_policy: accept-new` a server with no key on
record under any of its names gets its key recorded on first contact (ssh's
StrictHostKeyChecking=accept-new); a *changed* key is refused either way, naming the file and line
of the old entry. Nothing here ever trusts every key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import shlex
import socket
from collections import deque
from pathlib import Path
from typing import Any

import asyncssh
from sshfs import SSHFileSystem
from sshfs.file import SSHFile

from cai_common import CaiError
from dlt_destinations.sftp.configuration import SftpDestinationConfig

REMOTE_HASH_TIMEOUT = 900.0
"""Longest wait for the server's hash of a file (a 100 GB file hashes in about 5 minutes)."""


class HostKeyRefused(CaiError, ConnectionRefusedError):
    """The server's host key is not in known_hosts (or differs from the recorded one); never retried."""


class SftpLoginRefused(CaiError, PermissionError):
    """The server refused the configured user's password or key."""


class RenameUnsupported(CaiError, OSError):
    """The server cannot rename files (MinIO's SFTP gateway, some NAS setups)."""


class SftpServerError(CaiError, OSError):
    """The SFTP server refused an operation on an open file (disk full, quota, I/O error), with its reason."""


def _translated(method: Any) -> Any:
    """An SSHFile method whose asyncssh errors become SftpServerError (sshfs lets them through)."""

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except asyncssh.SFTPError as exc:
            raise SftpServerError(f"sftp server: {exc.reason}") from exc

    return call


WRITES_IN_FLIGHT = 4
"""Writes a file keeps going at once: the server is never left waiting between them."""


class SftpFile(SSHFile):
    """sshfs's file, raising OSError subclasses like every other filesystem here, writing behind.

    sshfs waits for each write to be acknowledged whole before the next one starts, so the link
    stands idle between writes, less so the bigger they are (hence 4 MB writes and their memory).
    Here each write goes out at its offset and the caller goes on, up to `WRITES_IN_FLIGHT`;
    asyncssh cuts each into requests of the server's write length, from a memoryview of the
    caller's bytes (no copy). A write the server refused is raised by a later write or by `close`,
    which waits for every one and closes the handle regardless; the caller then removes the file.
    With the writer's 1 MB pieces, moving 1 GiB from S3 to OpenSSH peaked at 153 MB against 174 MB
    in 4 MB writes each awaited whole, and took a little less time (bench/transfer.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: deque[concurrent.futures.Future[int]] = deque()
        self._written = 0

    read = _translated(SSHFile.read)

    @_translated
    def write(self, data: bytes) -> int:
        sent = asyncio.run_coroutine_threadsafe(self._file.write(memoryview(data), self._written), self.loop)
        self._written += len(data)
        self._in_flight.append(sent)
        while len(self._in_flight) > WRITES_IN_FLIGHT:
            self._in_flight.popleft().result()
        return len(data)

    def tell(self) -> int:
        return self._written if self.writable() else int(SSHFile.tell(self))

    @_translated
    def _close(self) -> None:
        try:
            while self._in_flight:
                self._in_flight.popleft().result()
        finally:
            SSHFile._close(self)


class SftpFileSystem(SSHFileSystem):
    """sshfs whose `mv` is a real rename or an error, never sshfs' copy-then-delete fallback.

    A copy-then-delete would expose a half-written final file, which is what the temp name is for.
    posix-rename (atomic, replaces) is tried first; then plain SFTP rename, after removing an
    existing target. A server refusing both gets RenameUnsupported, naming `"atomic_rename": false`.
    """

    protocol = ("sftp", "ssh")  # sshfs leaves its class's protocol as fsspec's "abstract"

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.server = f"{host}:{kwargs.get('port', 22)}"

    def _open(self, path: str, *args: Any, **kwargs: Any) -> SftpFile:
        return SftpFile(self, path, *args, **kwargs)

    def remote_sha256(self, path: str) -> str | None:
        """The server's own SHA-256 of a file over an exec channel (stdin closed), or None where the
        login may not run one (SFTP-only accounts, `ForceCommand internal-sftp`): the caller then reads
        the file back. Saves reading every byte back over the link.

        OpenSSL's `dgst` first (it uses the CPU's SHA instructions: 0.6 s per GiB here, where coreutils'
        `sha256sum` takes 2.3 s), then `sha256sum`; each as its own command, so no shell syntax is assumed.
        """
        quoted = shlex.quote(path)
        for command in (f"openssl dgst -sha256 -r -- {quoted}", f"sha256sum -- {quoted}"):
            try:
                result = self.execute(command, check=False, input="", timeout=REMOTE_HASH_TIMEOUT)
            except Exception:  # refused, timed out, not a shell: read back instead
                return None
            words = str(result.stdout or "").split()
            if result.exit_status == 0 and words and re.fullmatch(r"[0-9a-f]{64}", words[0]):
                return words[0]
        return None

    def unstrip_protocol(self, name: str) -> str:
        return f"sftp://{self.server}/{self._strip_protocol(name).lstrip('/')}"

    async def _mv(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        async with self._pool.get() as channel:
            try:
                await channel.posix_rename(lpath, rpath)
                return
            except asyncssh.SFTPOpUnsupported:
                pass
            except asyncssh.SFTPError as exc:
                raise _cannot_rename(self.server, exc) from exc
            try:
                if await channel.exists(rpath):
                    await channel.remove(rpath)
                await channel.rename(lpath, rpath)
            except asyncssh.SFTPError as exc:
                raise _cannot_rename(self.server, exc) from exc


def _cannot_rename(server: str, exc: asyncssh.SFTPError) -> RenameUnsupported:
    return RenameUnsupported(
        f"sftp server {server} cannot rename the temp file into place ({exc.reason}); if this server never "
        'renames (MinIO\'s SFTP gateway, some NAS setups), set "atomic_rename": false in the destination '
        "config to write files in place (a failed transfer then removes its partial file)"
    )


def _known_hosts_path(config: SftpDestinationConfig) -> Path:
    return Path(config.known_hosts).expanduser() if config.known_hosts else Path("~/.ssh/known_hosts").expanduser()


def _record_host_key(config: SftpDestinationConfig, path: Path) -> None:
    """accept-new: fetch the server's key and append it to known_hosts, unless the host is already listed."""
    import asyncio

    async def fetch() -> Any:
        return await asyncssh.get_server_host_key(config.host, config.port)

    key = asyncio.run(fetch())
    if key is None:
        raise HostKeyRefused(f"sftp server {config.host}:{config.port} offered no host key")
    host = config.host if config.port == 22 else f"[{config.host}]:{config.port}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{host} {key.export_public_key('openssh').decode().strip()}\n")


def _address(host: str) -> str:
    """The host's IP address, as OpenSSH also matches known_hosts entries by address ("" if unresolvable)."""
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0])
    except OSError:
        return ""


def _entries_for(config: SftpDestinationConfig, path: Path) -> list[int]:
    """Line numbers of known_hosts entries that name this server (any name, hashed or not, any marker)."""
    if not path.exists():
        return []
    port = None if config.port == 22 else config.port
    address = _address(config.host)
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            found = asyncssh.import_known_hosts(line + "\n").match(config.host, address, port)
        except (asyncssh.KeyImportError, ValueError):
            continue  # a line asyncssh (and so the connection) cannot read names nothing
        if any(found[:3]):  # host keys, CA keys, revoked keys
            lines.append(number)
    return lines


def _has_aes_instructions(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU encrypts AES in hardware (x86's `aes` flag, arm64's `aes` feature)."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith(("flags", "Features")) and " aes " in f" {line.split(':', 1)[-1]} "
                       for line in f)
    except OSError:
        return False


def encryption_algs(aes_in_hardware: bool | None = None) -> list[str]:
    """asyncssh's ciphers, AES-GCM first where the CPU has AES instructions (what OpenSSH and rclone
    choose there). asyncssh puts ChaCha20-Poly1305 first: 1 GiB to OpenSSH on loopback took 5.4-5.8 s
    and 2.8-3.2 CPU-seconds here, 3.8-4.0 s and 1.6-1.7 with aes128-gcm. The server still picks from
    the whole list, so one without GCM gets the rest."""
    from asyncssh.encryption import get_default_encryption_algs

    algs = [a.decode() for a in get_default_encryption_algs()]
    if not (_has_aes_instructions() if aes_in_hardware is None else aes_in_hardware):
        return algs
    gcm = [a for a in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if a in algs]
    return gcm + [a for a in algs if a not in gcm]


def open_sftp(config: SftpDestinationConfig) -> SftpFileSystem:
    """An sshfs filesystem logged in with the config's password or key, the host key verified.

    Raises:
        HostKeyRefused: the server's key is unknown (policy `reject`) or does not match known_hosts.
        SftpLoginRefused: the login was refused.
    """
    known_hosts = _known_hosts_path(config)
    on_record = _entries_for(config, known_hosts)
    if config.host_key_policy == "accept-new" and not on_record:
        _record_host_key(config, known_hosts)
    options: dict[str, Any] = {
        "port": config.port,
        "username": config.username,
        "known_hosts": str(known_hosts) if known_hosts.exists() else [],
        "connect_timeout": config.connect_timeout,
        # A dead link (no RST, packets lost) would block a write for the kernel's ~15 minutes:
        # keepalives without an answer close the connection after 4 intervals.
        "keepalive_interval": config.keepalive_seconds,
        "keepalive_count_max": 4,
        "skip_instance_cache": True,
        "encryption_algs": encryption_algs(),
    }
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.pkey_path:
        options["client_keys"] = [str(Path(config.pkey_path).expanduser())]
    else:
        options["client_keys"] = []  # no keys from ~/.ssh or an agent: only what the config names
    options["agent_path"] = None
    try:
        return SftpFileSystem(config.host, **options)
    except asyncssh.HostKeyNotVerifiable as exc:
        server = f"{config.host}:{config.port}"
        if on_record:  # OpenSSH's words: the key changed, which may be an attack; never accepted
            lines = ", ".join(str(n) for n in on_record)
            raise HostKeyRefused(
                f"sftp server {server}: REMOTE HOST IDENTIFICATION HAS CHANGED: its host key differs from the "
                f"one recorded in `{known_hosts}` (line {lines}); if the change is expected, remove the old "
                f"entry (ssh-keygen -R '{config.host if config.port == 22 else f'[{config.host}]:{config.port}'}' "
                f"-f {known_hosts}) and let `accept-new` record the new key, or add it yourself"
            ) from exc
        advice = ("or set `host_key_policy` to `accept-new`" if config.host_key_policy == "reject"
                  else "(`accept-new` could not record it)")
        raise HostKeyRefused(
            f"sftp server {server}: host key not trusted ({exc.reason}); add it to `{known_hosts}` {advice}"
        ) from exc
    except (asyncssh.PermissionDenied, PermissionError) as exc:  # sshfs turns PermissionDenied into PermissionError
        reason = getattr(exc, "reason", None) or str(exc)
        raise SftpLoginRefused(f"sftp server {config.host}:{config.port}: login refused for "
                               f"`{config.username}` ({reason})") from exc
