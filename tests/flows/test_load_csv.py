"""`cai load-csv`: analysts' one-liner, local folders and s3:// globs, through the console script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.paths.load_csv import split_location
from tests.awkward import AWKWARD_ROWS, awkward_csv
from tests.flows.test_cli import CAI

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def _cai(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CAI, *args], env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1", **(env or {})},
                          capture_output=True, text=True, timeout=240, check=False)


def _count(url: str, schema: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/in/*.csv", ("/data/in", "*.csv")),
        ("s3://bucket/in/2024/**/*.csv", ("s3://bucket/in/2024", "**/*.csv")),
        ("s3://bucket/in/", ("s3://bucket/in", "*.csv")),
        ("/data/in/labs.csv.gz", ("/data/in", "labs.csv.gz")),
    ],
)
def test_split_location(location: str, expected: tuple[str, str]) -> None:
    assert split_location(location) == expected


def test_local_glob_loads_then_reruns_load_nothing_and_replace_reloads(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    awkward_csv(tmp_path / "visits.csv")
    awkward_csv(tmp_path / "labs.csv", rows=AWKWARD_ROWS[:2])
    first = _cai("load-csv", f"{tmp_path}/*.csv", "--to", config_store, "--schema", schema_name)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "loaded 7 rows from 2 file(s)" in first.stdout
    assert "visits.csv" in first.stdout and "loaded" in first.stdout
    assert (_count(config_store, schema_name, "visits"), _count(config_store, schema_name, "labs")) == (5, 2)

    again = _cai("load-csv", f"{tmp_path}/*.csv", "--to", config_store, "--schema", schema_name)
    assert again.returncode == 0 and "no new or changed files" in again.stdout
    assert _count(config_store, schema_name, "visits") == 5

    replaced = _cai("load-csv", f"{tmp_path}/*.csv", "--to", config_store, "--schema", schema_name, "--replace")
    assert replaced.returncode == 0 and "loaded 7 rows" in replaced.stdout
    assert _count(config_store, schema_name, "visits") == 5


def test_one_table_for_every_file_and_default_dsn(config_store: str, tmp_path: Path, schema_name: str) -> None:
    awkward_csv(tmp_path / "a.csv")
    awkward_csv(tmp_path / "b.csv")
    result = _cai("load-csv", str(tmp_path), "--schema", schema_name, "--table", "all_visits",
                  env={"DATABASE_URL": config_store})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _count(config_store, schema_name, "all_visits") == 10


def test_s3_glob_with_credentials_from_minio_env(
    config_store: str, s3_bucket: dict[str, Any], schema_name: str, tmp_path: Path
) -> None:
    fs, bucket, creds = s3_bucket["fs"], s3_bucket["bucket"], s3_bucket["credentials"]
    awkward_csv(tmp_path / "x.csv")
    fs.put(str(tmp_path / "x.csv"), f"{bucket}/drop/2024/labs_q1.csv")
    fs.put(str(tmp_path / "x.csv"), f"{bucket}/drop/labs_top.csv")
    env = {"MINIO_ENDPOINT": creds["endpoint_url"], "MINIO_ACCESS_KEY": creds["aws_access_key_id"],
           "MINIO_SECRET_KEY": creds["aws_secret_access_key"]}
    result = _cai("load-csv", f"s3://{bucket}/drop/**/*.csv", "--to", config_store, "--schema", schema_name, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _count(config_store, schema_name, "labs_q1") == _count(config_store, schema_name, "labs_top") == 5
    assert creds["aws_secret_access_key"] not in result.stdout


def test_a_bad_file_exits_1_naming_it(config_store: str, tmp_path: Path, schema_name: str) -> None:
    (tmp_path / "ragged.csv").write_text("id,name\n1,a\n2,b,c\n")
    result = _cai("load-csv", str(tmp_path / "ragged.csv"), "--to", config_store, "--schema", schema_name)
    assert result.returncode == 1
    assert "ragged.csv" in result.stdout and "line 3 has the wrong number of fields" in result.stdout


def test_column_options_pin_types_and_a_bad_one_is_one_clear_line(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    (tmp_path / "doses.csv").write_text("mrn,dose,code\n12345,1.5,7\n00042,2.25,8\n")
    pinned = _cai("load-csv", str(tmp_path / "doses.csv"), "--to", config_store, "--schema", schema_name,
                  "--column", "mrn:text", "--column", "dose:numeric(10,3)")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    with psycopg.connect(config_store) as conn:
        types = conn.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                             "WHERE a.attrelid = %s::regclass AND a.attnum > 0 ORDER BY a.attnum",
                             (f"{schema_name}.doses",)).fetchall()
        values = conn.execute(f'SELECT mrn, dose::text FROM "{schema_name}".doses ORDER BY mrn').fetchall()
    assert types == [("mrn", "text"), ("dose", "numeric(10,3)"), ("code", "bigint")]
    assert values == [("00042", "2.250"), ("12345", "1.500")]

    for option, problem in (("mrn", "--column `mrn` must be NAME:TYPE"),
                            ("mrn:txet", "--column mrn: must be a PostgreSQL type")):
        bad = _cai("load-csv", str(tmp_path / "doses.csv"), "--to", config_store, "--schema", schema_name,
                   "--column", option)
        assert bad.returncode == 1 and problem in bad.stdout, bad.stdout + bad.stderr
        assert "Traceback" not in bad.stdout + bad.stderr


def test_csv_edge_cases_load_or_fail_in_one_line(config_store: str, tmp_path: Path, schema_name: str) -> None:
    """Long headers sharing a prefix, a 10 MB field (psql loads it), and 2,000 columns (PostgreSQL holds 1,600)."""
    prefix = "a" * 70
    (tmp_path / "long.csv").write_text(f"{prefix}_first,{prefix}_second\n1,2\n")
    note = "x" * (10 * 1024 * 1024)
    (tmp_path / "note.csv").write_text(f'id,note\n1,"{note}"\n2,short\n')
    for name in ("long", "note"):
        done = _cai("load-csv", str(tmp_path / f"{name}.csv"), "--to", config_store, "--schema", schema_name)
        assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f'SELECT length(note) FROM "{schema_name}".note ORDER BY id').fetchall() == [
            (len(note),), (5,)]
        columns = conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                               "AND table_name = 'long'", (schema_name,)).fetchone()
    assert columns == (2,)
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(2000)) + "\n" + "1," * 1999 + "1\n")
    wide = _cai("load-csv", str(tmp_path / "wide.csv"), "--to", config_store, "--schema", schema_name)
    assert wide.returncode == 1
    assert "wide.csv`: has 2000 columns; a PostgreSQL table holds at most 1600" in " ".join(wide.stdout.split())
    assert "Traceback" not in wide.stdout + wide.stderr


def test_load_csv_runs_on_dlts_driver_alone(config_store: str, tmp_path: Path, schema_name: str) -> None:
    """`cai load-csv` opens PostgreSQL only through psycopg2, which dlt's destination loads anyway: psycopg 3
    would add 16 MB to a process whose goal is 150 MB (bench/load_csv.py). Nor does it import
    pydantic-settings for cai's settings (0.07-0.1 s and about 1 MB). Checked in the process itself,
    after a real load, by a handler that runs once the command has finished."""
    awkward_csv(tmp_path / "visits.csv")
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('psycopg 3 loaded:', 'psycopg' in sys.modules))\n"
             "atexit.register(lambda: print('pydantic-settings loaded:', 'pydantic_settings' in sys.modules))\n"
             f"sys.argv = ['cai', 'load-csv', '{tmp_path}/visits.csv', '--to', '{config_store}', "
             f"'--schema', '{schema_name}']\n"
             "from flows.cli import main\n"
             "main()\n")
    done = subprocess.run([str(Path(CAI).with_name("python")), "-c", probe], capture_output=True, text=True,
                          timeout=240, check=False, env={**os.environ, "COLUMNS": "250"})
    assert "loaded 5 rows" in done.stdout, done.stdout + done.stderr
    assert "psycopg 3 loaded: False" in done.stdout, done.stdout + done.stderr
    assert "pydantic-settings loaded: False" in done.stdout, done.stdout + done.stderr
    assert _count(config_store, schema_name, "visits") == 5


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run `cai ARGS` with its output on a pseudo-terminal (as a person runs it); its exit code and the
    lines it drew, escape sequences removed."""
    import pty
    import re
    import select

    leader, follower = pty.openpty()
    process = subprocess.Popen([CAI, *args], stdin=follower, stdout=follower, stderr=follower, close_fds=True,
                               env={**os.environ, "TERM": "xterm", "COLUMNS": "120", **env})
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 240)
        assert ready, "no output for 240 s"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode(errors="replace"))
    return process.wait(timeout=60), [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_a_load_on_a_terminal_shows_the_copy_moving_at_its_real_rate(
    config_store: str, tmp_path: Path, schema_name: str
) -> None:
    import re

    from tests.corpus import psql_copy_out

    # psql's own export: leading-zero MRNs, fractional-second timestamps with offsets, NULLs; ~100 MB, so
    # that even a fast machine's COPY takes a second (the bar redraws ten times a second)
    psql_copy_out(config_store, "SELECT g AS visit_id, lpad(g::text, 8, '0') AS mrn, timestamptz "
                                "'2026-01-01 08:00:00.123456+00' + g * interval '1 second' AS seen_at, CASE WHEN "
                                "g % 7 = 0 THEN NULL ELSE g * 1.5 END AS dose FROM generate_series(1, 2000000) g",
                  tmp_path / "visits.csv")
    code, lines = _on_a_terminal(["load-csv", str(tmp_path / "visits.csv"), "--to", config_store,
                                  "--schema", schema_name], {})
    assert code == 0, "\n".join(lines[-20:])
    assert "loaded 2000000 rows from 1 file(s)" in " ".join(lines)
    # every frame of a bar: its label, then `done/total MB` and the rate
    frames = [(m[1], float(m[2]), m[3]) for line in lines
              if (m := re.match(r"(read 1 file\(s\)|COPY into PostgreSQL)\W+([\d.]+)/[\d.]+ MB\s+(\S+)", line))]
    size = (tmp_path / "visits.csv").stat().st_size / 1e6
    copied = sorted({done for label, done, _ in frames if label.startswith("COPY") and 0 < done < round(size, 1)})
    assert len(copied) >= 3, f"the COPY's bar did not move while it ran: {frames}"
    rates = [rate for label, done, rate in frames if label.startswith("COPY") and done > 0]
    assert rates and not any(rate.endswith(("GB/s", "TB/s")) for rate in rates), rates  # no rate of a jump
    assert {label for label, *_ in frames} == {"read 1 file(s)", "COPY into PostgreSQL"}
    with psycopg.connect(config_store) as conn:
        loaded = conn.execute(f'SELECT count(*), count(DISTINCT mrn), min(mrn) FROM "{schema_name}"."visits"')
        assert loaded.fetchone() == (2000000, 2000000, "00000001")
