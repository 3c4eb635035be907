"""Benchmark: moving a large object S3 -> folder and S3 -> SFTP, against rclone in the same run.

Starts moto's S3 server (its own process on loopback) and Debian's OpenSSH server (`sshd`, key
login as the current user), puts one object of --mb megabytes (default 1024) in a bucket, then
measures, each as its own process, whole-process wall time and peak RSS:

- `rclone copyto` of the object to a folder, and to the SFTP server: the reference (rclone from the
  distribution's package; `apt-get install rclone openssh-server`);
- this product's transfer path (`files_transfer`, move with hash verification) to a folder, and to
  the same SFTP server.

Each move is undone between runs (the object is put back). Prints MB/s (whole process and in-run)
and peak RSS (process and children, sampled every 20 ms).

    .venv/bin/python bench/transfer.py [--mb 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Measured, fastest, measure, settle  # noqa: E402

BIN = Path(sys.executable).parent
KEY, SECRET, BUCKET = "bench-key", "bench-secret", "bench-transfer"

PRODUCT = """
import json, sys, time
from flows.store.connector_config import ConnectorConfig
from flows.paths.transfers import files_transfer
from cai_common import exit_without_final_collection
exit_without_final_collection()  # as `cai` and the flow do
endpoint, bucket, destination_type, destination = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
connector = ConnectorConfig.from_dict({"connector_id": 1, "connector_name": "bench", "source_type": "s3",
    "source_config": {"bucket": bucket, "path": "in", "file_pattern": "*", "endpoint_url": endpoint,
                      "aws_access_key_id": "bench-key", "aws_secret_access_key": "bench-secret"},
    "destination_type": destination_type, "destination_config": destination})
started = time.monotonic()
outcome = files_transfer(connector)
print(f"{outcome.summary} in {time.monotonic() - started:.2f} s")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int) -> None:
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def _sshd(work: Path, port: int) -> subprocess.Popen[bytes]:
    """Debian's OpenSSH server on loopback, key login as the current user, SFTP by internal-sftp."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise SystemExit("needs OpenSSH's sshd: apt-get install openssh-server")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work}/host_key\nPidFile {work}/sshd.pid\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = (work / "host_key.pub").read_text().split()
    (work / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="object size in MB (1 MB = 2^20 bytes)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cai-bench-transfer"))
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="the config store a connector run has (DATABASE_URL)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of rclone and the product to each destination, alternating; the fastest counts "
                             "(peak RSS: the highest)")
    args = parser.parse_args()
    if not shutil.which("rclone"):
        raise SystemExit("needs rclone: apt-get install rclone")
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "ssh").mkdir(parents=True)
    s3_port, sftp_port = _free_port(), _free_port()
    servers = [
        subprocess.Popen([str(BIN / "python"), "-m", "moto.server", "-p", str(s3_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        _sshd(args.work / "ssh", sftp_port),
    ]
    try:
        _wait_for(s3_port)
        _wait_for(sftp_port)
        run(args, f"http://127.0.0.1:{s3_port}", sftp_port)
    finally:
        for server in servers:
            server.terminate()


def run(args: argparse.Namespace, endpoint: str, sftp_port: int) -> None:
    import getpass
    import json

    import s3fs

    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint})
    fs.mkdir(BUCKET)
    source = args.work / "object.bin"
    with open(source, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(args.mb):
            f.write(block[i % 256:] + block[: i % 256])  # distinct blocks, cheap to make
    size_mb = source.stat().st_size / 1e6
    key = f"{BUCKET}/in/object.bin"
    ssh = args.work / "ssh"
    drop = Path.home() / f"cai-bench-drop-{os.getpid()}"  # the SFTP user's own folder
    user = getpass.getuser()
    # AWS_CA_BUNDLE (set on machines behind a TLS proxy) makes rclone's S3 client refuse to start
    env = {**{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
           "CAI_HOME": str(args.work / "home"), "CAI_PIPELINES_DIR": str(args.work / "pipelines"),
           # the config store every connector run has (else the product would start an embedded one)
           "DATABASE_URL": args.dsn,
           # rclone's remotes, from its environment (no config file)
           "RCLONE_CONFIG_SRC_TYPE": "s3", "RCLONE_CONFIG_SRC_PROVIDER": "Other",
           "RCLONE_CONFIG_SRC_ACCESS_KEY_ID": KEY, "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY": SECRET,
           "RCLONE_CONFIG_SRC_ENDPOINT": endpoint, "RCLONE_CONFIG_NAS_TYPE": "sftp",
           "RCLONE_CONFIG_NAS_HOST": "127.0.0.1", "RCLONE_CONFIG_NAS_PORT": str(sftp_port),
           "RCLONE_CONFIG_NAS_USER": user, "RCLONE_CONFIG_NAS_KEY_FILE": str(ssh / "client_key"),
           "RCLONE_CONFIG_NAS_KNOWN_HOSTS_FILE": str(ssh / "known_hosts")}
    sftp = {"host": "127.0.0.1", "port": sftp_port, "username": user, "pkey_path": str(ssh / "client_key"),
            "path": str(drop), "known_hosts": str(ssh / "known_hosts")}
    to_folder = [
        ("rclone copyto S3 -> folder (reference)",
         ["rclone", "copyto", f"src:{key}", str(args.work / "rclone" / "object.bin")],
         args.work / "rclone" / "object.bin", False),
        ("cai move S3 -> folder (hash verified)",
         [str(BIN / "python"), "-c", PRODUCT, endpoint, BUCKET, "nfs", json.dumps({"path": str(args.work / "folder")})],
         args.work / "folder" / "object.bin", True),
    ]
    to_sftp = [
        ("rclone copyto S3 -> SFTP (reference)",
         ["rclone", "copyto", f"src:{key}", f"nas:{drop}/rclone.bin"], drop / "rclone.bin", False),
        ("cai move S3 -> SFTP (hash verified)",
         [str(BIN / "python"), "-c", PRODUCT, endpoint, BUCKET, "sftp", json.dumps(sftp)], drop / "object.bin", True),
    ]
    print(f"object: {size_mb:.0f} MB; S3: moto on loopback; SFTP: Debian's OpenSSH on loopback")
    print(f"\n{'method':42} {'wall s':>7} {'MB/s':>7} {'work s':>7} {'MB/s':>7} {'whole':>6} {'peak RSS MB':>12}")
    try:
        for runs in (to_folder, to_sftp):
            measured: dict[str, list[Measured]] = {name: [] for name, *_ in runs}
            for _ in range(args.repeats):  # rclone and the product alternate
                for name, cmd, landed, moves in runs:
                    if not fs.exists(key):
                        fs.put_file(str(source), key)
                    settle()  # the last copy's dirty pages are written now, not during this one (rclone never syncs)
                    m = measure(cmd, env)
                    assert landed.stat().st_size == source.stat().st_size, f"{name}: wrong size at {landed}"
                    assert fs.exists(key) != moves, f"{name}: the source was {'not ' if moves else ''}moved"
                    landed.unlink()
                    measured[name].append(m)
            reference = 0.0
            for name, _cmd, _landed, moves in runs:
                m = fastest(measured[name])
                work = float(m.stdout.rsplit(" in ", 1)[1].split()[0]) if moves else m.seconds
                reference = reference if moves else m.seconds  # rclone, to the same place
                print(f"{name:42} {m.seconds:>7.2f} {size_mb / m.seconds:>7.1f} {work:>7.2f} {size_mb / work:>7.1f} "
                      f"{m.seconds / reference:>5.2f}x {m.peak_rss_mb:>12.0f}")
    finally:
        shutil.rmtree(drop, ignore_errors=True)
    print(f"\nbest of {args.repeats} runs of each (alternating; peak RSS the highest).")
    print("wall = the whole process (start-up and imports included); work = the transfer itself, timed")
    print("inside the process after imports (rclone: its wall time); whole = wall time as a multiple of rclone's")
    print("to the same destination.")


if __name__ == "__main__":
    main()
