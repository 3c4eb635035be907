"""Benchmark: moving a large object S3 -> folder and S3 -> SFTP, with throughput and peak RSS.

Starts moto's S3 server and an asyncssh SFTP server, each in its own process on loopback (so their
memory is not counted as ours), puts one object of --mb megabytes (default 1024) in a bucket, then
measures, each in a fresh process:

- boto3 `download_file` of the object to a folder: the reference (S3's own transfer manager, which
  neither verifies nor renames);
- this product's transfer path (`files_transfer`, move with hash verification) to a folder;
- the same to an SFTP directory.

Each move is undone between runs (the object is put back). Prints MB/s and peak RSS (process and
children, sampled every 20 ms). Target: peak RSS under 200 MB whatever the size.

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
from common import measure  # noqa: E402

BIN = Path(sys.executable).parent
KEY, SECRET, BUCKET = "bench-key", "bench-secret", "bench-transfer"

SFTP_SERVER = """
import asyncio, sys, asyncssh
root, port, known_hosts = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Server(asyncssh.SSHServer):
    def password_auth_supported(self): return True
    def validate_password(self, username, password): return (username, password) == ("bench", "bench-pass")

async def main():
    key = asyncssh.generate_private_key("ssh-ed25519")
    await asyncssh.create_server(Server, "127.0.0.1", port, server_host_keys=[key],
                                 sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root))
    with open(known_hosts, "w") as f:
        f.write(f"[127.0.0.1]:{port} {key.export_public_key().decode().strip()}\\n")
    await asyncio.Event().wait()

asyncio.run(main())
"""

REFERENCE = """
import sys, time, boto3
endpoint, bucket, key, out = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench-key", aws_secret_access_key="bench-secret",
                  region_name="us-east-1")
started = time.monotonic()
s3.download_file(bucket, key, out)
print(f"downloaded in {time.monotonic() - started:.2f} s")
"""

PRODUCT = """
import json, sys, time
from flows.store.connector_config import ConnectorConfig
from flows.paths.transfers import files_transfer
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="object size in MB (1 MB = 2^20 bytes)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cai-bench-transfer"))
    parser.add_argument("--skip-reference", action="store_true",
                        help="leave out boto3's download (moto makes it slow on large objects)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "sftp").mkdir(parents=True)
    s3_port, sftp_port = _free_port(), _free_port()
    servers = [
        subprocess.Popen([str(BIN / "python"), "-m", "moto.server", "-p", str(s3_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(BIN / "python"), "-c", SFTP_SERVER, str(args.work / "sftp"), str(sftp_port),
                          str(args.work / "known_hosts")]),
    ]
    try:
        _wait_for(s3_port)
        _wait_for(sftp_port)
        run(args, f"http://127.0.0.1:{s3_port}", sftp_port)
    finally:
        for server in servers:
            server.terminate()


def run(args: argparse.Namespace, endpoint: str, sftp_port: int) -> None:
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
    env = {**os.environ, "CAI_HOME": str(args.work / "home"), "CAI_PIPELINES_DIR": str(args.work / "pipelines")}
    runs = [
        ("boto3 download_file (reference)", [str(BIN / "python"), "-c", REFERENCE, endpoint, BUCKET,
                                             "in/object.bin", str(args.work / "reference.bin")], None),
        ("cai move S3 -> folder (hash verified)", [str(BIN / "python"), "-c", PRODUCT, endpoint, BUCKET, "nfs",
                                                   json.dumps({"path": str(args.work / "folder")})],
         args.work / "folder" / "object.bin"),
        ("cai move S3 -> SFTP (hash verified)", [str(BIN / "python"), "-c", PRODUCT, endpoint, BUCKET, "sftp",
                                                 json.dumps({"host": "127.0.0.1", "port": sftp_port,
                                                             "username": "bench", "password": "bench-pass",
                                                             "path": "/drop",
                                                             "known_hosts": str(args.work / "known_hosts")})],
         args.work / "sftp" / "drop" / "object.bin"),
    ]
    if args.skip_reference:
        runs = runs[1:]
    print(f"object: {size_mb:.0f} MB")
    print(f"\n{'method':40} {'wall s':>7} {'work s':>7} {'MB/s':>7} {'peak RSS MB':>12}")
    for name, cmd, landed in runs:
        if not fs.exists(key):
            fs.put_file(str(source), key)
        m = measure(cmd, env)
        if landed is not None:
            assert landed.stat().st_size == source.stat().st_size, f"{name}: wrong size at {landed}"
            assert not fs.exists(key), f"{name}: the source was not moved"
            landed.unlink()
        work = float(m.stdout.rsplit(" in ", 1)[1].split()[0])
        print(f"{name:40} {m.seconds:>7.2f} {work:>7.2f} {size_mb / work:>7.1f} {m.peak_rss_mb:>12.0f}")
    print("\nwork s = the transfer itself, timed inside the process after imports; MB/s uses it.")


if __name__ == "__main__":
    main()
