"""Network faults for tests: a TCP proxy on loopback that cuts or silences a link mid-transfer."""

from __future__ import annotations

import contextlib
from typing import Any


class CuttingProxy:
    """A TCP proxy on loopback that breaks the link after `cut_after` bytes went upstream.
    `blackhole=False`: the first connection is closed after that many of its bytes (a reset), later
    ones pass untouched. `blackhole=True`: after that many bytes over all connections the link goes
    silent, as when a route or a NAT entry dies: nothing more is forwarded and nothing closed."""

    def __init__(self, upstream_port: int, cut_after: int, blackhole: bool = False) -> None:
        import socket
        import threading

        self.upstream_port, self.cut_after, self.blackhole, self.connections = upstream_port, cut_after, blackhole, 0
        self.cut = threading.Event()
        self.held: list[Any] = []
        self.shared: list[int | None] = [cut_after]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.blackhole and self.cut.is_set():
                self.held.append(client)  # accepted, read, never answered
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.held += [client, upstream]  # closed with the proxy, so no server waits on a dead link for ever
            # blackhole: one budget for the link, whichever connection uses it
            budget = self.shared if self.blackhole else [self.cut_after if self.connections == 1 else None]
            for src, dst, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, budget if counted else [None], (client, upstream)),
                                 daemon=True).start()

    @staticmethod
    def _swallow(sock: Any) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    def _pump(self, src: Any, dst: Any, budget: list[int | None], both: tuple[Any, Any]) -> None:
        import socket

        try:
            while data := src.recv(65536):
                if self.blackhole and self.cut.is_set():
                    continue  # swallowed: the link is silent
                if budget[0] is not None:
                    budget[0] -= len(data)
                    if budget[0] < 0:
                        self.cut.set()
                        if self.blackhole:
                            continue
                        break
                dst.sendall(data)
        except OSError:
            pass
        if self.blackhole and self.cut.is_set():
            return
        for sock in both:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def heal(self) -> None:
        """The route comes back: new connections pass untouched (the silent ones stay silent until closed)."""
        self.connections = max(self.connections, 1)
        self.blackhole = False

    def close(self) -> None:
        import socket

        self.listener.close()
        for sock in self.held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def stalling_sftp(sftp_server: dict[str, Any], tmp_path: Any, folder: str,
                  cut_after: int = 1024 * 1024) -> tuple[CuttingProxy, dict[str, Any]]:
    """A proxy in front of the test SFTP server whose link goes silent after ``cut_after`` bytes (an upload
    that stalls), and an `sftp` destination config writing to ``/folder`` through it."""
    proxy = CuttingProxy(sftp_server["port"], cut_after=cut_after, blackhole=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp_server["host_line"].replace(f":{sftp_server['port']} ", f":{proxy.port} ") + "\n")
    return proxy, {"host": "127.0.0.1", "port": proxy.port, "username": "loader", "password": "sftp-pass-123",
                   "path": f"/{folder}", "known_hosts": str(known_hosts), "keepalive_seconds": 60}
