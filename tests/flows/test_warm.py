"""The flow-run command and the warm process (flows/orchestration/warm.py), as real processes.

The engine is given flow runs it cannot run (an id that is not a UUID; an API that is not there),
so each test sees the path a run takes without a Prefect server: cold start, the fork that inherits
the command's streams, a killed command taking its run with it, a signal passed on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

PYTHON = sys.executable


def _command_env(socket_path: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.pop("CAI_WARM_SOCKET", None)
    if socket_path:
        env["CAI_WARM_SOCKET"] = socket_path
    return env


@pytest.fixture
def warm_process(tmp_path: Path) -> Iterator[tuple[psutil.Process, str]]:
    path = str(tmp_path / "warm.sock")
    server = subprocess.Popen([PYTHON, "-m", "flows.orchestration.warm", "--serve", path],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(path):
            assert server.poll() is None, server.stderr.read() if server.stderr else "warm process exited"
            assert time.monotonic() < deadline, "warm process never listened"
            time.sleep(0.1)
        yield psutil.Process(server.pid), path
    finally:
        server.terminate()
        server.wait(10)


def test_without_a_warm_process_the_command_runs_the_engine_itself(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "flows.orchestration.warm", "not-a-uuid"], capture_output=True, text=True,
                          timeout=120, env=_command_env(str(tmp_path / "nobody-listens.sock")))
    assert done.returncode == 1 and "Invalid flow run id" in done.stderr, done.stderr


def test_a_warm_process_forks_the_run_with_the_commands_streams_and_exit_code(
    warm_process: tuple[psutil.Process, str],
) -> None:
    server, path = warm_process
    started = time.monotonic()
    done = subprocess.run([PYTHON, "-m", "flows.orchestration.warm", "not-a-uuid"], capture_output=True, text=True,
                          timeout=120, env=_command_env(path))
    took = time.monotonic() - started
    assert done.returncode == 1 and "Invalid flow run id" in done.stderr, done.stderr  # the child's stderr
    assert "found in sys.modules" not in done.stderr
    cold = subprocess.run([PYTHON, "-m", "prefect.engine", "not-a-uuid"], capture_output=True, text=True,
                          timeout=120, env=_command_env(None))
    assert cold.returncode == 1
    print(f"warm {took:.2f} s")  # the imports are the warm process's: no assertion on time (not a timed test)
    assert server.is_running()  # one run's failure is not the warm process's


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API address that accepts connections and never answers: a run waiting on it stays alive."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        listener.close()


def _child_of(server: psutil.Process, timeout: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = server.children()
        if children:
            return children[0]
        time.sleep(0.05)
    raise AssertionError("the warm process forked no run")


def test_a_killed_command_takes_its_run_with_it(warm_process: tuple[psutil.Process, str], silent_api: str) -> None:
    """Prefect watches the command's pid: if it is killed outright, the forked run must not live on."""
    server, path = warm_process
    env = {**_command_env(path), "PREFECT_API_URL": silent_api}  # the run would wait a minute for an answer
    command = subprocess.Popen([PYTHON, "-m", "flows.orchestration.warm", str(uuid.uuid4())], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _child_of(server)
    command.kill()
    command.wait(10)
    gone, _ = psutil.wait_procs([child], timeout=10)
    assert gone, "the run outlived its command"


def test_a_signal_to_the_command_reaches_the_run(warm_process: tuple[psutil.Process, str], silent_api: str) -> None:
    """Cancellation: Prefect sends SIGTERM to the pid it started; the run gets it and the command ends with it."""
    server, path = warm_process
    env = {**_command_env(path), "PREFECT_API_URL": silent_api}
    command = subprocess.Popen([PYTHON, "-m", "flows.orchestration.warm", str(uuid.uuid4())], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _child_of(server)
    time.sleep(0.5)  # the engine has installed its handlers
    command.send_signal(signal.SIGTERM)
    code = command.wait(30)
    assert code not in (0, -signal.SIGTERM)  # the command relayed the run's own exit, it was not just killed
    gone, _ = psutil.wait_procs([child], timeout=10)
    assert gone


@pytest.mark.parametrize(("cpu_max", "cores"), [
    ("max 100000\n", None),  # no quota: the cores this process may run on
    ("150000 100000\n", 2),  # a container limited to 1.5 cores: 2 (slots wait on I/O)
    ("50000 100000\n", 1),
    (None, None),  # no cgroup v2 file (cgroup v1, another OS)
])
def test_the_default_worker_slots_follow_the_cores_a_container_may_use(
    tmp_path: Path, cpu_max: str | None, cores: int | None,
) -> None:
    from flows.orchestration.warm import usable_cores

    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(str(path)) == min(affinity, cores or affinity)


def test_prefect_clients_share_one_tls_context_per_ca_file_and_no_one_else_does(tmp_path: Path) -> None:
    """Run in a fresh interpreter: the sharing changes `ssl` for the process that turns it on."""
    script = f"""
import os, shutil, ssl, certifi
from prefect._internal.websockets import create_ssl_context_for_websocket as for_prefect
from flows.orchestration.warm import share_prefect_tls_contexts
before = for_prefect("wss://x"), for_prefect("wss://x")
assert before[0] is not before[1]  # Prefect's own behaviour: a new context per client
share_prefect_tls_contexts()
share_prefect_tls_contexts()  # idempotent
first, again = for_prefect("wss://x"), for_prefect("wss://x")
assert first is again
assert ssl.create_default_context(cafile=certifi.where()) is not first  # not Prefect's call: untouched
ca = shutil.copy(certifi.where(), "{tmp_path}/ca.pem")
os.environ["PREFECT_API_SSL_CERT_FILE"] = ca
from prefect.context import refresh_global_settings_context
refresh_global_settings_context()
other = for_prefect("wss://x")
assert other is not first and for_prefect("wss://x") is other  # another CA file: its own context
with open(ca, "a") as f:
    f.write("\\n")  # the file changed: a new context
assert for_prefect("wss://x") is not other
assert for_prefect("ws://x") is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
