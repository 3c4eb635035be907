"""`cai worker` stops the way a pod is stopped: SIGTERM, then SIGKILL once the grace period is over.

Prefect's process worker, asked to stop (SIGINT, or SIGTERM which it turns into SIGINT), kills its runs
in flight outright as it exits: their records stay `started` and their flow runs RUNNING until something
sweeps them. So `cai worker` keeps the Prefect worker as a child and stands between it and the signal:

1. SIGTERM (or SIGINT): the Prefect worker is frozen (SIGSTOP), so it claims no new run; the runs in
   flight are processes of their own and go on.
2. Runs still going after `CAI_WORKER_STOP_SECONDS` (40) are ended (SIGKILL: whatever a run's threads
   wait on, an upload to a silent link say, it ends at once), and then their records are closed
   `failed` saying the worker was stopped and their Prefect flow runs set CRASHED (each run's
   `PREFECT__FLOW_RUN_ID` tells which). Ending a run this way loses nothing, as any killed process
   does not: a copy gets its final name, and a moved source is deleted, only after its verification.
3. The Prefect worker is let go (SIGCONT, SIGINT), and `EXIT_MARGIN` seconds later anything left is
   killed: about 45 s in all, inside the manifests' `terminationGracePeriodSeconds` of 60.

A second SIGTERM or SIGINT goes straight to step 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_MARGIN = 3.0
"""Seconds the Prefect worker gets to leave once its runs are done."""

RUN_MARKERS = ("flows.orchestration.warm", "prefect.engine")
"""What a flow-run process's command line holds (the warm relay, or a cold engine)."""


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process (Linux /proc)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[1]), fields[0])
    return found


def descendants(root: int) -> list[int]:
    """Every live process under ``root``."""
    tree: dict[int, list[int]] = {}
    for pid, (parent, state) in _processes().items():
        if state != "Z":
            tree.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def flow_run_processes(root: int) -> list[int]:
    """The flow-run processes under ``root``."""
    runs = []
    for pid in descendants(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in command for marker in RUN_MARKERS) and "--serve" not in command:
            runs.append(pid)
    return runs


def _adopt_orphans() -> None:
    """Become the subreaper of everything under this process: a run whose Prefect worker exited first is
    reparented here (not to init), so it is still found, stopped and waited for."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: runs stay with init, as before
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap(keep: set[int]) -> None:
    """Collect adopted runs that ended (never the children Popen waits for itself)."""
    me = os.getpid()
    for pid, (parent, state) in _processes().items():
        if parent == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


def _flow_run_id(pid: int) -> str | None:
    """The flow run a run process stands for (Prefect gives each its `PREFECT__FLOW_RUN_ID`)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def stop_runs(pids: Sequence[int]) -> list[dict[str, object]]:
    """End these run processes, then close their records and end their flow runs; returns the records
    closed. A run that finished in between keeps the outcome it recorded."""
    from flows.orchestration.heartbeat import STOPPED_BY_WORKER, close_stopped_runs, end_flow_runs_of

    flow_runs = [fr for fr in (_flow_run_id(pid) for pid in pids) if fr]
    _signal(pids, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and pid in descendants(os.getpid())
                                              for pid in pids):
        _reap(set())
        time.sleep(0.05)
    time.sleep(0.5)  # a warm run's own process ends when its relay does (it watches the connection)
    closed = close_stopped_runs(flow_runs)
    try:
        end_flow_runs_of(closed, message=f"run record {{id}} {STOPPED_BY_WORKER}")
    except Exception as exc:  # no Prefect API answering: the sweep of a later run ends them
        print(f"cai worker: could not end the flow runs it stopped: {exc}", file=sys.stderr, flush=True)
    return closed


def supervise(command: list[str], stop_seconds: float, helpers: Sequence[subprocess.Popen[bytes]] = ()) -> int:
    """Run the Prefect worker ``command`` until it ends, stopping it as the module docstring says."""
    _adopt_orphans()
    worker = subprocess.Popen(command)
    own = {worker.pid, *(h.pid for h in helpers)}
    asked: list[float] = []  # when a stop was asked for, once per signal

    def on_signal(signum: int, _frame: object) -> None:
        asked.append(time.monotonic())
        if len(asked) == 1:
            _signal([worker.pid], signal.SIGSTOP)
            print(f"cai worker: {signal.Signals(signum).name}: taking no new runs; runs in flight have "
                  f"{stop_seconds:g} s to finish", file=sys.stderr, flush=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    released_at: float | None = None
    while worker.poll() is None:
        time.sleep(0.2)
        _reap(own)
        if not asked:
            continue
        now = time.monotonic()
        if released_at is not None:
            if now - released_at >= EXIT_MARGIN:
                _signal([*descendants(os.getpid())], signal.SIGKILL)
            continue
        runs = flow_run_processes(os.getpid())
        if runs and (len(asked) > 1 or now - asked[0] >= stop_seconds):
            try:
                closed = stop_runs(runs)
                print(f"cai worker: stopped {len(runs)} run(s) still in flight; closed their records "
                      f"({', '.join(str(r['id']) for r in closed) or 'none open'}) as failed", file=sys.stderr,
                      flush=True)
            except Exception as exc:  # the store is away: the next run of each connector closes its record
                print(f"cai worker: stopped {len(runs)} run(s); could not close their records: {exc}",
                      file=sys.stderr, flush=True)
            runs = []
        if not runs:
            _signal([worker.pid], signal.SIGCONT)  # it has no run left to kill
            _signal([worker.pid], signal.SIGINT)
            released_at = now
    _signal(flow_run_processes(os.getpid()), signal.SIGKILL)
    for helper in helpers:
        if helper.poll() is None:
            helper.terminate()
    code = worker.wait()
    return 0 if asked else code


__all__ = ["EXIT_MARGIN", "descendants", "flow_run_processes", "stop_runs", "supervise"]
