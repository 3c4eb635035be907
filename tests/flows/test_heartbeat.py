"""Heartbeats and the stale-run sweep against the session's config store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from flows.orchestration.heartbeat import beat, heartbeat, sweep_stale_runs
from flows.store.run_records import create_run_record, get_run, update_run_record


def test_the_sweep_closes_only_runs_whose_heartbeat_went_stale(
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    connector_id = make_connector("filesystem", {"path": str(tmp_path)}, "nfs", {"path": str(tmp_path / "out")})
    dead, alive = create_run_record(connector_id, "fr-dead"), create_run_record(connector_id, "fr-alive")
    with psycopg.connect(config_store) as conn:
        conn.execute("UPDATE cai_connector_runs SET heartbeat_at = (now() AT TIME ZONE 'UTC') - interval '10 minutes' "
                     "WHERE id = %s", (dead,))
    beat(alive)
    closed = [r["id"] for r in sweep_stale_runs(older_than=120)]
    assert dead in closed and alive not in closed
    dead_run, alive_run = get_run(dead), get_run(alive)
    assert dead_run is not None and dead_run["status"] == "failed" and dead_run["finished_at"] is not None
    assert "worker stopped responding: no heartbeat since" in dead_run["log_summary"]
    assert alive_run is not None and alive_run["status"] == "started"
    assert dead not in [r["id"] for r in sweep_stale_runs(older_than=120)]  # a closed run is never swept twice


def test_a_heartbeat_thread_keeps_the_run_fresh(
    make_connector: Callable[..., int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAI_HEARTBEAT_SECONDS", "0.2")
    connector_id = make_connector("filesystem", {"path": str(tmp_path)}, "nfs", {"path": str(tmp_path / "out")})
    run_id = create_run_record(connector_id, "fr-beating")
    first = get_run(run_id)
    assert first is not None
    with heartbeat(run_id):
        time.sleep(1.0)
    later = get_run(run_id)
    assert later is not None and later["heartbeat_at"] > first["heartbeat_at"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_every_flow_run_sweeps_runs_of_dead_workers_first(
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    from flows.dlt_pipeline_flow import run_connector_pipeline

    (tmp_path / "in").mkdir()
    connector_id = make_connector("filesystem", {"path": str(tmp_path / "in")}, "nfs", {"path": str(tmp_path / "out")})
    orphan = create_run_record(connector_id, "fr-orphan")
    with psycopg.connect(config_store) as conn:
        conn.execute("UPDATE cai_connector_runs SET heartbeat_at = (now() AT TIME ZONE 'UTC') - interval '1 hour' "
                     "WHERE id = %s", (orphan,))
    run_connector_pipeline(connector_id)
    swept = get_run(orphan)
    assert swept is not None and swept["status"] == "failed" and "worker stopped responding" in swept["log_summary"]


def test_a_run_holding_its_connectors_lock_closes_that_connectors_unfinished_runs_at_once(
    make_connector: Callable[..., int], tmp_path: Path,
) -> None:
    """A worker killed seconds before the next run of its connector still has a fresh heartbeat, so the
    stale sweep leaves its record `started`. The next run holds the connector's run lock, which no live
    run of it could hold too: it closes that record as failed. Other connectors' runs are left alone."""
    from flows.orchestration.run import run_directly

    (tmp_path / "in").mkdir()
    connector_id = make_connector("filesystem", {"path": str(tmp_path / "in")}, "nfs", {"path": str(tmp_path / "out")})
    other = make_connector("filesystem", {"path": str(tmp_path / "in")}, "nfs", {"path": str(tmp_path / "other")})
    killed, elsewhere = create_run_record(connector_id, "fr-killed"), create_run_record(other, "fr-elsewhere")
    beat(killed)
    assert killed not in [r["id"] for r in sweep_stale_runs()]  # fresh: not stale yet
    result = run_directly(connector_id)
    assert result["status"] == "success" and result["run_id"] != killed
    closed, untouched = get_run(killed), get_run(elsewhere)
    assert closed is not None and closed["status"] == "failed" and closed["finished_at"] is not None
    assert "worker stopped responding" in closed["log_summary"]
    assert untouched is not None and untouched["status"] == "started"
    update_run_record(elsewhere, "failed", 0, "closed by the test", {})


def test_times_are_utc_whatever_each_sessions_time_zone(
    make_connector: Callable[..., int], config_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run written from UTC-11 is not swept as dead from UTC+14, and its times read as UTC."""
    connector_id = make_connector("filesystem", {"path": str(tmp_path)}, "nfs", {"path": str(tmp_path / "out")})
    monkeypatch.setenv("PGTZ", "Pacific/Pago_Pago")  # libpq sets each new session's TimeZone from PGTZ
    run_id = create_run_record(connector_id, "fr-west")
    beat(run_id)
    monkeypatch.setenv("PGTZ", "Pacific/Kiritimati")
    assert run_id not in [r["id"] for r in sweep_stale_runs(older_than=120)]
    with psycopg.connect(config_store) as conn:
        conn.execute("SET TIME ZONE 'America/Anchorage'")
        drift = conn.execute("SELECT extract(epoch FROM (now() AT TIME ZONE 'UTC') - started_at), "
                             "extract(epoch FROM (now() AT TIME ZONE 'UTC') - heartbeat_at) "
                             "FROM cai_connector_runs WHERE id = %s", (run_id,)).fetchone()
    assert drift is not None and all(0 <= float(d) < 60 for d in drift)
