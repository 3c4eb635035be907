"""A connector the backend reconfigures keeps working: its next run sends everything to the new target.

The backend changes connectors with plain SQL on the config tables; these tests do the same between
two runs, and run two config stores (same connector id) against one pipelines directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.dlt_pipeline_flow import run_connector_pipeline
from flows.store import catalog
from flows.store.config_store import init_db

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

FILES = {"labs.csv": b"id,value\n1,2.5\n", "notes.txt": "Zoë's notes\n".encode(), "scan.bin": bytes(range(256))}


def _fill(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def _sql(url: str, statement: str, params: tuple[Any, ...]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(statement, params)


def _point_destination_at(url: str, connector_id: int, config: dict[str, Any]) -> None:
    """What the backend does: rewrite the connector's defined destination's config."""
    _sql(url, "UPDATE cai_defined_destinations SET config = %s::jsonb WHERE id = "
              "(SELECT defined_destination_id FROM cai_connectors WHERE id = %s)", (json.dumps(config), connector_id))


def test_a_copy_connector_whose_folder_changes_copies_everything_to_the_new_folder(
    make_connector: Callable[..., int], config_store: str, tmp_path: Path,
) -> None:
    source = _fill(tmp_path / "in")
    first, second = tmp_path / "out_a", tmp_path / "out_b"
    connector_id = make_connector("filesystem", {"path": str(source), "transfer": "copy"}, "nfs",
                                  {"path": str(first)})
    assert "copied 3 of 3" in run_connector_pipeline(connector_id)["log_summary"]
    assert _files(first) == FILES

    _point_destination_at(config_store, connector_id, {"path": str(second)})
    moved = run_connector_pipeline(connector_id)
    assert "copied 3 of 3" in moved["log_summary"] and _files(second) == FILES

    # Back to the first folder: its own state says everything is there already.
    _point_destination_at(config_store, connector_id, {"path": str(first)})
    back = run_connector_pipeline(connector_id)
    assert "copied 0 of 0" in back["log_summary"] and "3 unchanged file(s) already copied" in back["log_summary"]


def test_a_copy_connector_switched_to_a_rest_endpoint_uploads_everything(
    make_connector: Callable[..., int], config_store: str, tmp_path: Path, upload_server: Any,
) -> None:
    source = _fill(tmp_path / "in")
    connector_id = make_connector("filesystem", {"path": str(source), "transfer": "copy"}, "nfs",
                                  {"path": str(tmp_path / "out")})
    run_connector_pipeline(connector_id)
    rest = catalog.define_destination("upload api", "rest_api", {"url": upload_server.url})
    _sql(config_store, "UPDATE cai_connectors SET defined_destination_id = %s WHERE id = %s", (rest, connector_id))
    result = run_connector_pipeline(connector_id)
    assert "copied 3 of 3" in result["log_summary"]
    assert sorted(u["files"]["file"][0] for u in upload_server.uploads) == sorted(FILES)


def test_a_csv_connector_pointed_at_another_schema_loads_every_file_there(
    make_connector: Callable[..., int], warehouse: dict[str, Any], config_store: str, incoming: Path,
    schema_name: str,
) -> None:
    (incoming / "labs.csv").write_text("id,value\n1,2.5\n2,3.75\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                                  "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(connector_id)["rows_ingested"] == 2
    moved_to = f"{schema_name}_b"
    _sql(config_store, "UPDATE cai_connectors SET destination_config_override = %s::jsonb WHERE id = %s",
         (json.dumps({"schema": moved_to}), connector_id))
    assert run_connector_pipeline(connector_id)["rows_ingested"] == 2
    with psycopg.connect(config_store) as conn:
        for schema in (schema_name, moved_to):
            assert conn.execute(f"SELECT count(*) FROM {schema}.labs").fetchone() == (2,)
        conn.execute(f"DROP SCHEMA {moved_to} CASCADE")


def test_a_connector_whose_destination_kind_changes_keeps_working(
    make_connector: Callable[..., int], warehouse: dict[str, Any], config_store: str, incoming: Path,
    schema_name: str, tmp_path: Path,
) -> None:
    """postgres -> folder -> postgres: each target keeps its own pipeline state."""
    (incoming / "labs.csv").write_text("id,value\n1,2.5\n")
    connector_id = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv",
                                                 "transfer": "copy"},
                                  "postgres", {**warehouse, "schema": schema_name})
    assert run_connector_pipeline(connector_id)["rows_ingested"] == 1
    folder = catalog.define_destination("archive", "nfs", {"path": str(tmp_path / "archive")})
    _sql(config_store, "UPDATE cai_connectors SET defined_destination_id = %s WHERE id = %s", (folder, connector_id))
    assert "copied 1 of 1" in run_connector_pipeline(connector_id)["log_summary"]
    assert _files(tmp_path / "archive") == {"labs.csv": b"id,value\n1,2.5\n"}
    database = catalog.define_destination("warehouse again", "postgres", {**warehouse, "schema": schema_name})
    _sql(config_store, "UPDATE cai_connectors SET defined_destination_id = %s WHERE id = %s", (database, connector_id))
    again = run_connector_pipeline(connector_id)
    assert again["rows_ingested"] == 0 and "already loaded" in again["log_summary"]


def test_two_config_stores_with_the_same_connector_id_never_share_state(
    config_store: str, fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = _fill(tmp_path / "in")
    init_db(fresh_db)
    connector_id = 4242
    for store, out in ((config_store, "out_a"), (fresh_db, "out_b")):
        source_id = catalog.define_source("shared drop", "filesystem", {"path": str(source), "transfer": "copy"},
                                          url=store)
        destination_id = catalog.define_destination("archive", "nfs", {"path": str(tmp_path / out)}, url=store)
        _sql(store, "INSERT INTO cai_connectors (id, name, defined_source_id, defined_destination_id) "
                    "VALUES (%s, 'same id', %s, %s)", (connector_id, source_id, destination_id))
    try:
        for store in (config_store, fresh_db):
            monkeypatch.setenv("DATABASE_URL", store)
            assert "copied 3 of 3" in run_connector_pipeline(connector_id)["log_summary"]
        assert _files(tmp_path / "out_a") == FILES and _files(tmp_path / "out_b") == FILES
    finally:
        _sql(config_store, "DELETE FROM cai_connectors WHERE id = %s", (connector_id,))


def test_upgrading_from_connector_id_pipelines_loads_nothing_twice(
    make_connector: Callable[..., int], warehouse: dict[str, Any], config_store: str, incoming: Path,
    schema_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Earlier versions named every pipeline `connector_<id>`: the first run after upgrading adopts its ledger."""
    from flows.paths import tables as paths_postgres
    from flows.paths import transfers as paths_transfers

    (incoming / "labs.csv").write_text("id,value\n1,2.5\n2,3.75\n")
    loader = make_connector("filesystem", {"path": str(incoming), "file_pattern": "*.csv"},
                            "postgres", {**warehouse, "schema": schema_name})
    copier = make_connector("filesystem", {"path": str(incoming), "transfer": "copy"},
                            "nfs", {"path": str(tmp_path / "archive")})
    with monkeypatch.context() as old_version:  # what the earlier version ran
        for module in (paths_postgres, paths_transfers):
            old_version.setattr(module, "pipeline_name_for", lambda c: f"connector_{c.connector_id}")
        assert run_connector_pipeline(loader)["rows_ingested"] == 2
        assert "copied 1 of 1" in run_connector_pipeline(copier)["log_summary"]
    _as_earlier_versions_kept_it(config_store, f"connector_{copier}")
    (tmp_path / "archive" / "labs.csv").unlink()  # a copy resent would show up here again

    upgraded = run_connector_pipeline(loader)
    assert upgraded["rows_ingested"] == 0 and "1 file(s) matching" in upgraded["log_summary"]
    assert "1 unchanged file(s) already copied" in run_connector_pipeline(copier)["log_summary"]
    assert not (tmp_path / "archive" / "labs.csv").exists()
    with psycopg.connect(config_store) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema_name}.labs").fetchone() == (2,)
    (incoming / "more.csv").write_text("id,value\n3,1\n")
    assert run_connector_pipeline(loader)["rows_ingested"] == 1


def _as_earlier_versions_kept_it(config_store: str, pipeline_name: str) -> None:
    """Move a copy pipeline's delivered-files ledger from the config store into its dlt state on this
    worker's disk, where versions before `cai_delivered_files` kept it."""
    import dlt

    from dlt_sources.filesystem.manifests import MANIFESTS
    from flows.paths.pipelines import pipelines_dir, remember_files

    with psycopg.connect(config_store) as conn:
        rows = conn.execute("DELETE FROM cai_delivered_files WHERE pipeline_name = %s RETURNING file_url, version",
                            (pipeline_name,)).fetchall()
    assert rows
    remember_files(dlt.attach(pipeline_name, pipelines_dir=str(pipelines_dir())), dict(rows), MANIFESTS)
