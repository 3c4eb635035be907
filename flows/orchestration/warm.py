"""Warm flow-run processes: a process that has already imported Prefect, dlt and the flow forks each run.

A flow run is a process the Prefect worker starts and watches (its pid, its exit code, signals to
cancel it); that does not change. What changes is what the process does first: instead of importing
Prefect, dlt, pyarrow and the flow (about 3 CPU-seconds each time), `python -m flows.orchestration.warm`
(the deployment's flow-run command, `deployment.FLOW_RUN_COMMAND`) connects to the worker's warm process over a
unix socket (`CAI_WARM_SOCKET`, set by `cai worker`) and hands it its stdin/stdout/stderr, working folder,
environment and arguments. The warm process forks; the child runs `prefect.engine` exactly as the
command line would, for that flow run, with the imports already done. The command then only relays:
signals it gets go to the child (Prefect's cancellation), and it exits with the child's exit code.

Nothing depends on the warm process being there: with no socket, or a warm process that does not
answer, the command runs `prefect.engine` itself (a cold start). If the command dies, its child kills
itself (it watches the connection), so a run never outlives the process Prefect watches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import NoReturn

SOCKET_ENV = "CAI_WARM_SOCKET"
START_ENV = "CAI_PROCESS_START"
"""Set to `warm` in a forked run (the run record's `metrics.process_start` says which way it started)."""
# (`prefect.engine` itself is not: the child runs it as `__main__`, as `python -m prefect.engine` would.)
PRELOAD = ("prefect", "prefect.flow_engine", "prefect.task_engine", "prefect.runner", "prefect.deployments.steps.pull",
           "prefect.utilities.visualization", "prefect._internal.installation", "prefect._internal.integrations",
           "prefect.concurrency.sync", "anyio._backends._asyncio", "anyio.streams.memory", "anyio.streams.stapled",
           "flows.dlt_pipeline_flow", "flows.orchestration.run", "flows.orchestration.concurrency",
           "flows.orchestration.heartbeat", "flows.orchestration.deployment", "flows.store.connector_config",
           "flows.paths", "flows.paths.tables", "flows.paths.transfers", "flows.paths.exports",
           "dlt_sources.filesystem.staging", "dlt_sources.filesystem.resource", "dlt",
           "dlt.common.configuration.plugins", "dlt.sources.helpers.requests", "pendulum.locales.en.locale",
           "pyarrow", "pyarrow.csv", "pyarrow.compute", "psycopg", "pydoc")
"""Imported once by the warm process: what a run imports, found by listing the modules a warm run of
each path imported itself (each is a fork: whatever it imports, it imports for itself alone)."""


DEFAULT_RUNS_PER_CORE = 4
"""`cai worker`'s default slots per core. A burst of 200 small runs on 2 cores drained at 56 runs/min
with 4 slots, 73 with 6 and 85 with 8, where the cores were busy: a run waits on the API and
PostgreSQL for much of its time."""


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit)."""
    from pathlib import Path

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, -(-int(quota) // int(period))))  # a quota of 1.5 cores counts as 2


def _cold(argv: list[str]) -> NoReturn:
    """Run the engine in this process (no warm process): what Prefect's own command does."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])


def client(argv: list[str]) -> int:
    """The flow-run command: hand the run to the warm process and relay until the run ends."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not os.path.exists(path):
        _cold(argv)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(10)
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
        reader = conn.makefile("rb")
        started = reader.readline()
        child = int(json.loads(started)["pid"])
    except (OSError, ValueError, KeyError):  # no warm process answering: start cold, nothing was run
        conn.close()
        _cold(argv)
    conn.settimeout(None)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for line in reader:
        if line.startswith(b"exit "):
            return int(line.split()[1])
    return 1  # the child died without saying how (killed): a failure


def share_prefect_tls_contexts() -> None:
    """Prefect's callers get one SSL context per CA file instead of a new one per API client.

    Prefect builds an SSL context from its CA file (certifi's, or PREFECT_API_SSL_CERT_FILE) for every
    API, events and version-check client it makes, even for an http:// API: about ten per run at 14 ms
    of CPU each, a quarter of a warm run's own CPU in a profile of 60 runs. A context built that way is
    only ever used to verify servers, never changed, and OpenSSL shares one among any number of
    connections, so it is built once per (file, size, mtime) and shared, in the warm process and its
    forks. Calls from any other module, and every other form of the call, are passed through untouched.
    """
    import ssl

    if getattr(ssl.create_default_context, "_cai_shared", False):
        return
    build = ssl.create_default_context
    built: dict[tuple[str, int, int], ssl.SSLContext] = {}

    def create_default_context(purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None,
                               capath: str | None = None, cadata: str | bytes | None = None) -> ssl.SSLContext:
        caller = str(sys._getframe(1).f_globals.get("__name__", ""))
        if cafile is None or capath is not None or cadata is not None or purpose != ssl.Purpose.SERVER_AUTH \
                or not caller.startswith("prefect."):
            return build(purpose, cafile=cafile, capath=capath, cadata=cadata)
        stat = os.stat(cafile)
        key = (os.fspath(cafile), stat.st_size, stat.st_mtime_ns)
        if key not in built:
            built[key] = build(purpose, cafile=cafile)
        return built[key]

    create_default_context._cai_shared = True  # type: ignore[attr-defined]
    ssl.create_default_context = create_default_context  # type: ignore[assignment]


def serve(path: str) -> None:
    """The warm process: import what runs need, then fork one child per request until the parent goes."""
    import importlib
    import threading

    for module in PRELOAD:
        importlib.import_module(module)
    share_prefect_tls_contexts()
    from prefect._internal.websockets import create_ssl_context_for_websocket

    create_ssl_context_for_websocket("wss://warm-up")  # built once here, shared by every fork
    if threading.active_count() != 1:  # forking a process with threads would copy their locks mid-use
        raise RuntimeError(f"warm process has threads after imports: {threading.enumerate()}")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.settimeout(1.0)
    parent = os.getppid()
    print(f"warm process {os.getpid()} serving {path}", file=sys.stderr, flush=True)
    try:
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError) as exc:
                print(f"warm process: bad request: {exc}", file=sys.stderr, flush=True)
                conn.close()
                continue
            if os.fork() == 0:
                listener.close()
                _child(conn, request, fds)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    conn.settimeout(10)
    head, fds, _flags, _addr = socket.recv_fds(conn, 4 + 65536, 3)
    if len(fds) != 3:
        raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
    size = int.from_bytes(head[:4], "big")
    body = bytearray(head[4:])
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("request cut short")
        body.extend(chunk)
    conn.settimeout(None)
    return dict(json.loads(bytes(body))), list(fds)


def _child(conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """In the fork: become the flow-run process the command stands for, run the engine, report, exit."""
    import runpy
    import threading

    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run's own subprocesses are waited for
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        os.environ[START_ENV] = "warm"
        sys.argv = ["prefect.engine", *[str(a) for a in list(request["argv"])]]  # type: ignore[call-overload]
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")

        def watch() -> None:  # the command that stands for this run is gone: so is the run
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="warm-watch", daemon=True).start()
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # this run's environment, not the warm process's
        import warnings

        # `prefect` imports `prefect.engine` itself, so runpy notes that `__main__` is a second copy.
        warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package",
                                category=RuntimeWarning)
        try:
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        # What the interpreter does on its way out, which os._exit skips: Prefect's log and event
        # workers drain at thread shutdown (a run's last log lines and task states), then atexit.
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
        os._exit(code)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        return
    sys.exit(client(sys.argv[1:]))


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_RUNS_PER_CORE", "SOCKET_ENV", "START_ENV", "client", "serve", "share_prefect_tls_contexts",
           "usable_cores"]
