"""Shared benchmark plumbing: timing a subprocess and sampling its peak RSS."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
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
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(SAMPLE_S)
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return Measured(seconds, peak / 1e6, out)


def bench_arguments(description: str, work: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --rows N (then 2N), --dsn of a server, --work folder."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="N; every method also runs at 2N")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--work", type=Path, default=Path(work), help="files and pipelines go here")
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
