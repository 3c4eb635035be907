"""TLS on every PostgreSQL connection, against a real TLS-only PostgreSQL with a CA made in the test.

The server (`tests.tlspg`) accepts TCP connections only over TLS and logs each session, so a test
reads from the server itself that every connection the product made was encrypted; its certificate
names `localhost` and is signed by a CA generated here. Run records, config store, the run lock, the
query source, the postgres destination and `cai load-csv --to` all go through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cai_common import ConnectorRunFailed
from tests.tlspg import TlsPostgres, tls_postgres

pytestmark = pytest.mark.slow

SOURCE_ROWS = """
CREATE SCHEMA clinic;
CREATE TABLE clinic.labs (mrn text, dose numeric(30,12), taken timestamptz, note text);
INSERT INTO clinic.labs VALUES
  ('00123', 123456789012345678.123456789012, '2026-03-01 08:15:30.123456+00', 'a, "quoted" note'),
  ('00456', -0.000000000001, '1999-12-31 23:59:59.999999+00', NULL),
  ('07', NULL, NULL, '');
CREATE ROLE tls_reader LOGIN;
GRANT pg_read_all_data TO tls_reader;
"""


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsPostgres]:
    with tls_postgres() as server:
        with psycopg.connect(server.url()) as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE cai")
        with psycopg.connect(server.url("cai")) as conn:
            conn.execute(SOURCE_ROWS)
        yield server


@pytest.fixture
def tls_store(tls_server: TlsPostgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """The config store itself on the TLS server, reached with verify-full."""
    from flows.store.config_store import init_db

    url = tls_server.url("cai")
    monkeypatch.setenv("DATABASE_URL", url)
    init_db(url)
    return url


@pytest.fixture
def make_connector_on(tls_store: str) -> Any:
    """Register a connector in the TLS config store."""
    from flows.store import catalog

    def make(source_type: str, source: dict[str, Any], destination_type: str, destination: dict[str, Any]) -> int:
        source_id = catalog.define_source("tls source", source_type, source)
        destination_id = catalog.define_destination("tls destination", destination_type, destination)
        return catalog.create_connector("tls connector", source_id, destination_id)

    return make


def _source(server: TlsPostgres, **changes: Any) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "database": "cai", "username": "tls_reader",
            "sslmode": "verify-full", "sslrootcert": str(server.ca),
            "query": "SELECT mrn, dose, taken, note FROM clinic.labs", **changes}


def _unencrypted(server: TlsPostgres) -> list[str]:
    return [line for line in server.connections() if "SSL enabled" not in line]


def test_a_connector_runs_end_to_end_over_verified_tls(
    tls_server: TlsPostgres, tls_store: str, make_connector_on: Any, tmp_path: Path,
) -> None:
    """Store, lock, records, a query source (fields) and a postgres destination (URL) all on verify-full."""
    from flows.orchestration.run import run_directly
    from flows.store.run_records import get_run

    before = len(tls_server.connections())
    connector_id = make_connector_on(
        "sql_database", _source(tls_server),
        "postgres", {"connection_string": tls_server.url("cai"), "schema": "landing", "table_name": "labs"})
    result = run_directly(connector_id)
    assert result["status"] == "success", result["log_summary"]
    with psycopg.connect(tls_server.url("cai")) as conn:
        differences = conn.execute("""
            (SELECT * FROM clinic.labs EXCEPT ALL SELECT mrn, dose, taken, note FROM landing.labs)
            UNION ALL (SELECT mrn, dose, taken, note FROM landing.labs EXCEPT ALL SELECT * FROM clinic.labs)
        """).fetchall()
        types = conn.execute("""SELECT column_name, data_type FROM information_schema.columns
                                WHERE table_schema = 'landing' AND table_name = 'labs' AND column_name IN
                                ('mrn', 'dose', 'taken') ORDER BY column_name""").fetchall()
    assert differences == []
    assert types == [("dose", "numeric"), ("mrn", "text"), ("taken", "timestamp with time zone")]
    record = get_run(result["run_id"])
    assert record is not None and record["status"] == "success" and record["rows_ingested"] == 3
    made = tls_server.connections()[before:]
    assert len(made) >= 4, made  # store, lock, source, destination at the least
    assert _unencrypted(tls_server) == []


def test_csv_files_load_through_load_csv_to_a_verify_full_url(tls_server: TlsPostgres, tmp_path: Path) -> None:
    """`cai load-csv --to` with a verify-full URL: the file is psql's own export of the source table."""
    with psycopg.connect(tls_server.url("cai")) as conn, conn.cursor() as cursor, \
            cursor.copy("COPY clinic.labs TO STDOUT (FORMAT csv, HEADER)") as copy:
        (tmp_path / "labs.csv").write_bytes(b"".join(bytes(chunk) for chunk in copy))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cai"), "load-csv", str(tmp_path / "labs.csv"),
         "--to", tls_server.url("cai"), "--schema", "from_csv", "--column", "dose:numeric(30,12)"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CAI_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    with psycopg.connect(tls_server.url("cai")) as conn:
        differences = conn.execute("""
            (SELECT * FROM clinic.labs EXCEPT ALL SELECT mrn, dose, taken, note FROM from_csv.labs)
            UNION ALL (SELECT mrn, dose, taken, note FROM from_csv.labs EXCEPT ALL SELECT * FROM clinic.labs)
        """).fetchall()
    assert differences == []
    assert _unencrypted(tls_server) == []


def test_a_wrong_ca_fails_the_run_naming_the_connector_side_and_field(
    tls_server: TlsPostgres, tls_store: str, make_connector_on: Any,
) -> None:
    from flows.orchestration.run import run_directly
    from flows.store.run_records import get_run

    connector_id = make_connector_on(
        "sql_database", _source(tls_server),
        "postgres", {"host": tls_server.host, "port": tls_server.port, "database": "cai", "username": "postgres",
                     "sslmode": "verify-full", "sslrootcert": str(tls_server.wrong_ca), "schema": "nowhere"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_directly(connector_id)
    summary = caught.value.result["log_summary"]
    assert f"connector {connector_id}" in summary and "destination `sslrootcert`" in summary, summary
    assert "certificate verify failed" in summary and "Traceback" not in summary, summary
    record = get_run(caught.value.result["run_id"])
    assert record is not None and record["status"] == "failed"
    with psycopg.connect(tls_server.url("cai")) as conn:
        assert conn.execute("SELECT to_regnamespace('nowhere')").fetchone() == (None,)


def test_a_host_name_not_on_the_certificate_fails_naming_the_host(
    tls_server: TlsPostgres, tls_store: str, make_connector_on: Any, tmp_path: Path,
) -> None:
    from flows.orchestration.run import run_directly

    connector_id = make_connector_on("sql_database", _source(tls_server, host="127.0.0.1"),
                                     "nfs", {"path": str(tmp_path / "out"), "file_name": "labs.csv"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_directly(connector_id)
    summary = caught.value.result["log_summary"]
    assert "source `host`" in summary and 'does not match host name "127.0.0.1"' in summary, summary
    assert not (tmp_path / "out" / "labs.csv").exists()


def test_nothing_falls_back_to_plaintext(
    tls_server: TlsPostgres, tls_store: str, make_connector_on: Any, tmp_path: Path,
) -> None:
    """`sslmode=disable` against a TLS-only server is refused by the server, and said so."""
    from flows.orchestration.run import run_directly

    connector_id = make_connector_on("sql_database", _source(tls_server, sslmode="disable"),
                                     "nfs", {"path": str(tmp_path / "out"), "file_name": "labs.csv"})
    with pytest.raises(ConnectorRunFailed) as caught:
        run_directly(connector_id)
    summary = caught.value.result["log_summary"]
    assert "source `sslmode`" in summary and "no encryption" in summary, summary
    assert _unencrypted(tls_server) == []


def test_the_query_reader_verifies_through_libpq(tls_server: TlsPostgres) -> None:
    """connectorx cannot verify a server against a CA file: a TLS source reads through psycopg instead."""
    from dlt_sources.sql_database import QueryReport, SqlDatabaseSourceConfig, query_batches

    config = SqlDatabaseSourceConfig.parse(_source(tls_server, query="SELECT mrn FROM clinic.labs ORDER BY mrn"),
                                           connector_id=1, side="source")
    report = QueryReport()
    rows = [value for batch in query_batches(config, report, 1) for value in batch.column("mrn").to_pylist()]
    assert rows == ["00123", "00456", "07"] and report.reader == "psycopg"
    wrong = SqlDatabaseSourceConfig.parse(_source(tls_server, sslrootcert=str(tls_server.wrong_ca)),
                                          connector_id=1, side="source")
    with pytest.raises(Exception, match="certificate verify failed"):
        list(query_batches(wrong, QueryReport(), 1))


def test_a_config_store_that_fails_tls_is_one_line_naming_the_setting(tls_server: TlsPostgres,
                                                                       tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cai"), "runs"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": tls_server.url("cai", sslrootcert=str(tls_server.wrong_ca)),
             "CAI_HOME": str(tmp_path)})
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert len(said.strip().splitlines()) <= 2 and "certificate verify failed" in said and "`sslrootcert`" in said, (
        said)
    assert "Traceback" not in said


def test_tls_fields_must_name_files_that_exist() -> None:
    from cai_common import ConnectorConfigError
    from dlt_destinations.postgres import PostgresDestinationConfig

    with pytest.raises(ConnectorConfigError, match=r"connector 9: destination `sslrootcert` must be a readable file"):
        PostgresDestinationConfig.parse({"host": "db", "database": "cai", "sslmode": "verify-full",
                                         "sslrootcert": "/nowhere/ca.crt"}, connector_id=9, side="destination")
    with pytest.raises(ConnectorConfigError, match=r"destination `sslmode` must be"):
        PostgresDestinationConfig.parse({"host": "db", "database": "cai", "sslmode": "verify"},
                                        connector_id=9, side="destination")


@pytest.fixture(scope="module")
def https_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA made here and a server certificate for `localhost` it signed (for S3 and REST over https)."""
    from tests.tlspg import make_ca, make_server_cert

    folder = tmp_path_factory.mktemp("https")
    ca, ca_key, ca_cert = make_ca(folder, "https test CA")
    cert, key = make_server_cert(folder, ca_key, ca_cert, "localhost")
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def https_s3(https_pair: dict[str, Path]) -> Iterator[str]:
    """moto's S3 server over https with the test CA's certificate, in its own process."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port),
                               "--ssl-cert", str(https_pair["cert"]), "--ssl-key", str(https_pair["key"])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else "moto exited"
                time.sleep(0.05)
        yield f"https://localhost:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_s3_over_https_verifies_the_endpoint_with_ca_bundle(
    https_s3: str, https_pair: dict[str, Path], make_connector: Any, incoming: Path,
) -> None:
    import boto3

    from flows.orchestration.run import run_directly

    s3 = boto3.client("s3", endpoint_url=https_s3, aws_access_key_id="tls-key-id",
                      aws_secret_access_key="tls-secret-value", region_name="us-east-1", verify=str(https_pair["ca"]))
    s3.create_bucket(Bucket="tls-drop")
    payload = b"mrn,dose\n00123,1.500\n"
    (incoming / "labs.csv").write_bytes(payload)
    s3_config = {"bucket": "tls-drop", "prefix": "in", "endpoint_url": https_s3, "aws_access_key_id": "tls-key-id",
                 "aws_secret_access_key": "tls-secret-value"}
    refused = make_connector("filesystem", {"path": str(incoming), "transfer": "move"}, "s3", s3_config)
    with pytest.raises(ConnectorRunFailed) as caught:  # the system's CAs do not know the test CA
        run_directly(refused)
    assert "certificate verify failed" in caught.value.result["log_summary"], caught.value.result["log_summary"]
    assert (incoming / "labs.csv").read_bytes() == payload  # the source stays
    verified = make_connector("filesystem", {"path": str(incoming), "transfer": "move"},
                              "s3", {**s3_config, "ca_bundle": str(https_pair["ca"])})
    assert run_directly(verified)["status"] == "success"
    assert s3.get_object(Bucket="tls-drop", Key="in/labs.csv")["Body"].read() == payload
    assert not (incoming / "labs.csv").exists()


def test_rest_over_https_verifies_the_server_with_verify(
    https_pair: dict[str, Path], make_connector: Any, incoming: Path,
) -> None:
    import ssl

    from pytest_httpserver import HTTPServer

    from flows.orchestration.run import run_directly

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(https_pair["cert"], https_pair["key"])
    server = HTTPServer(host="localhost", port=0, ssl_context=context)
    received: list[bytes] = []

    def record(request: Any) -> Any:
        from werkzeug import Response

        received.append(request.files["file"].read())
        return Response('{"ok": true}', status=201)

    server.expect_request("/upload").respond_with_handler(record)
    server.start()
    try:
        url = server.url_for("/upload")
        assert url.startswith("https://localhost:")
        (incoming / "note.txt").write_bytes(b"clinical note\n")
        refused = make_connector("filesystem", {"path": str(incoming), "transfer": "copy"}, "rest_api", {"url": url})
        with pytest.raises(ConnectorRunFailed) as caught:
            run_directly(refused)
        summary = caught.value.result["log_summary"]
        assert "TLS verification failed" in summary and "`verify`" in summary, summary
        assert received == []  # nothing was sent over an unverified connection
        verified = make_connector("filesystem", {"path": str(incoming), "transfer": "copy"},
                                  "rest_api", {"url": url, "verify": str(https_pair["ca"])})
        assert run_directly(verified)["status"] == "success"
        assert received == [b"clinical note\n"]
    finally:
        server.stop()
