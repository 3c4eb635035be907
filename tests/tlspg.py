"""Extra PostgreSQL clusters for tests: one that speaks only TLS (a CA made here), and a plain one.

Debian's PostgreSQL binaries (the machine's own server is Debian's; `.ci/run` installs it) run a
second cluster in a temporary folder: `ssl = on`, a server certificate for `localhost` signed by a
CA generated with `cryptography`, `hostssl` lines only in pg_hba.conf (a plaintext TCP connection is
refused by the server, so nothing can quietly fall back to it), and `log_connections` on so a test
can read from the server's own log that every session was encrypted.
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsPostgres:
    host: str
    port: int
    ca: Path
    """The CA that signed the server's certificate."""
    wrong_ca: Path
    """Another CA, which signed nothing this server shows."""
    log: Path

    def url(self, database: str = "postgres", **parameters: str) -> str:
        query = {"sslmode": "verify-full", "sslrootcert": str(self.ca), **parameters}
        return f"postgresql://postgres@{self.host}:{self.port}/{database}?" + "&".join(
            f"{k}={v}" for k, v in query.items())

    def connections(self) -> list[str]:
        """The server's `connection authorized` log lines so far."""
        return [line for line in self.log.read_text().splitlines() if "connection authorized" in line]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name.replace(' ', '_')}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(folder: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                     host: str) -> tuple[Path, Path]:
    """A server certificate for ``host`` (a DNS name) signed by the CA; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    assert found, "Debian's PostgreSQL server binaries are needed (apt-get install postgresql; .ci/run has them)"
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _cluster(work: Path, hba: str, options: str, owned: tuple[Path, ...] = ()) -> Iterator[int]:
    """A cluster of Debian's binaries in ``work`` (its pg_hba.conf ``hba``, postgres ``options``) on a
    free port of localhost; yields the port and stops the cluster afterwards."""
    bin_dir = _postgres_bin()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the cluster belongs to `postgres`
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(work, "postgres")
        for path in owned:
            shutil.chown(path, "postgres")
    data, log = work / "data", work / "server.log"
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    (data / "pg_hba.conf").write_text(hba)
    port = _free_port()
    options = f"-p {port} -k {work} -c listen_addresses=localhost -c fsync=off {options}"
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)


@contextmanager
def tls_postgres() -> Iterator[TlsPostgres]:
    """Start the TLS-only cluster; stop and remove it afterwards."""
    work = Path(tempfile.mkdtemp(prefix="cai-tls-pg-"))
    work.chmod(0o755)
    try:
        ca, ca_key, ca_cert = make_ca(work, "cai test CA")
        wrong_ca, _, _ = make_ca(work, "some other CA")
        server_cert, server_key = make_server_cert(work, ca_key, ca_cert, "localhost")
        hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
        options = (f"-c ssl=on -c ssl_cert_file={server_cert} -c ssl_key_file={server_key} "
                   "-c log_connections=on")
        with _cluster(work, hba, options, owned=(server_cert, server_key)) as port:
            yield TlsPostgres(host="localhost", port=port, ca=ca, wrong_ca=wrong_ca, log=work / "server.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def plain_postgres() -> Iterator[str]:
    """A cluster of Debian's full server (contrib extensions included: pg_trgm, which Prefect's tables
    need and the embedded server lacks) on localhost over plain TCP; yields its libpq URL."""
    work = Path(tempfile.mkdtemp(prefix="cai-pg-"))
    work.chmod(0o755)
    try:
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        with _cluster(work, hba, "") as port:
            yield f"postgresql://postgres@localhost:{port}/postgres"
    finally:
        shutil.rmtree(work, ignore_errors=True)
