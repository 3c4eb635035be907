"""Shared benchmark plumbing: timing a subprocess and sampling its peak RSS."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

# RSS is sampled this often; a 300 MB file loads in seconds, so 20 ms misses no plateau.
SAMPLE_S = 0.02


@dataclass
class Measured:
    """Wall time and peak resident memory of one command."""

    seconds: float
    peak_rss_mb: float
    stdout: str


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd``, polling the RSS of it and its children; fail loudly if it fails."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # the process ended between poll() and the sample
            peak = max(peak, tree_rss(ps))
        time.sleep(SAMPLE_S)
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return Measured(seconds, peak / 1e6, out)


def fastest(runs: list[Measured], key: Callable[[Measured], float] = lambda m: m.seconds) -> Measured:
    """The fastest of repeated runs of one command (by ``key``: wall time unless told), with the highest
    peak RSS any of them reached.

    On a shared machine noise only ever slows a run down (a checkpoint, writeback, another tenant),
    so each method's best time is compared with the other's; memory is what the process asked for,
    so the worst is kept.
    """
    quickest = min(runs, key=key)
    return Measured(quickest.seconds, max(m.peak_rss_mb for m in runs), quickest.stdout)


def settle(dsn: str | None = None) -> None:
    """Start a measurement from a quiet disk: write out dirty pages (and PostgreSQL's, with a CHECKPOINT),
    so what the previous method left is not written during the next one."""
    os.sync()
    if dsn is not None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def tree_rss(root: psutil.Process) -> int:
    """RSS of a process and its descendants, each memory image counted once.

    A child caught between fork and exec is not a memory image of its own: after Python's vfork it
    *is* its parent's (one address space), after a fork a copy-on-write view of it. Counting it would
    count the parent twice: a process that imports dlt runs `file -b python3` once (croniter asks
    `platform.architecture()`), and a sample landing in that window read 114 MB for a 57 MB process.
    Such a child has its parent's executable and the same virtual size; a child that has exec'd has
    neither (a Python child re-executing Python has a new, smaller image until it imports).
    """
    own = root.memory_info()
    total = own.rss
    infos = {root.pid: own}
    for child in root.children(recursive=True):
        try:
            info = child.memory_info()
            parent = infos.get(child.ppid())
            infos[child.pid] = info
            if parent is not None and info.vms == parent.vms and child.exe() == psutil.Process(child.ppid()).exe():
                continue  # between fork and exec: its parent's pages
            total += info.rss
        except psutil.Error:
            continue
    return total


def bench_arguments(description: str, work: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --rows N (then 2N), --dsn of a server, --work folder."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="N; every method also runs at 2N")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--work", type=Path, default=Path(work), help="files and pipelines go here")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each method, alternating; the fastest counts (peak RSS: the highest)")
    return parser


def scratch_database(admin_dsn: str, name: str, build_sql: str) -> str:
    """A fresh database `name` holding what ``build_sql`` makes, vacuumed and checkpointed; returns its DSN."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(build_sql.encode())  # no parameters: % is modulo in the SQL
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return dsn
