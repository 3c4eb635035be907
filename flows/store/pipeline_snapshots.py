"""A connector's dlt pipeline as `dlt pipeline` reads it, kept in the config store (`cai_pipeline_snapshots`).

The pipelines directory of the worker that ran a connector is a cache that goes with its pod. After
each run the pipeline's `state.json`, `schemas/`, `trace.pickle` and the descriptions of its completed
load packages (package state, schema, applied updates, and each job's file *name*, as an empty file:
never the data) are saved here, so `cai pipeline CONNECTOR_ID info|trace|schema|load-package` works on
any machine with `DATABASE_URL`.
"""

from __future__ import annotations

import importlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import psycopg2

from flows.store.config_store import UTC_NOW, connect

_PACKAGE_FILES = ("applied_schema_updates.json", "load_package_state.json", "package_completed.json", "schema.json")
_PACKAGES_KEPT = 5
"""The most recent load packages described (a pipeline that ran for years has thousands)."""


def _importable(reference: str) -> bool:
    """Whether another process can import the destination: not one of dlt's sinks, whose class
    `dlt.destination` makes inside the run (it exists in this process only)."""
    from dlt.destinations.impl.destination.factory import destination as sink

    module, _, attr = reference.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    return found is not None and not (isinstance(found, type) and issubclass(found, sink))


def _state(path: Path) -> bytes:
    """The pipeline state as dlt reads it elsewhere: a destination made at run time (a transfer's sink,
    whose class exists only inside the run) is left out, or `dlt pipeline` would fail to import it."""
    state = json.loads(path.read_bytes())
    if state.get("destination_type") and not _importable(state["destination_type"]):
        state.pop("destination_type")
        state.pop("destination_name", None)
    return json.dumps(state).encode()


def _archive(pipeline_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if (pipeline_dir / "state.json").is_file():
            data = _state(pipeline_dir / "state.json")
            info = tarfile.TarInfo("state.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if (pipeline_dir / "trace.pickle").is_file():
            tar.add(pipeline_dir / "trace.pickle", arcname="trace.pickle")
        if (pipeline_dir / "schemas").is_dir():
            for path in sorted((pipeline_dir / "schemas").rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(pipeline_dir)))
        loaded = pipeline_dir / "load" / "loaded"
        packages = sorted(loaded.iterdir(), key=lambda p: p.name)[-_PACKAGES_KEPT:] if loaded.is_dir() else []
        for package in packages:
            for path in sorted(package.rglob("*")):
                arcname = str(path.relative_to(pipeline_dir))
                if path.is_dir():
                    tar.add(path, arcname=arcname, recursive=False)
                elif path.name in _PACKAGE_FILES and path.parent == package:
                    tar.add(path, arcname=arcname)
                else:  # a job's data file: its name only
                    info = tarfile.TarInfo(arcname)
                    tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


def save_snapshot(pipelines_dir: str | Path, pipeline_name: str, connector_id: int, url: str | None = None) -> None:
    """Save the pipeline's description after a run (replacing the one before)."""
    archive = _archive(Path(pipelines_dir) / pipeline_name)
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO cai_pipeline_snapshots (pipeline_name, connector_id, archive) VALUES (%s, %s, %s) "
            f"ON CONFLICT (pipeline_name) DO UPDATE SET connector_id = EXCLUDED.connector_id, "
            f"archive = EXCLUDED.archive, saved_at = {UTC_NOW}",
            (pipeline_name, connector_id, psycopg2.Binary(archive)))


class NoSnapshot(LookupError):
    """No run of this connector saved its pipeline (it never ran, or ran before snapshots were kept)."""

    def __init__(self, connector_id: int) -> None:
        self.connector_id = connector_id
        super().__init__(f"connector {connector_id} has no saved pipeline yet: run it once (`cai run "
                         f"{connector_id}`), then inspect it")


def restore_snapshot(connector_id: int, pipelines_dir: Path, url: str | None = None) -> dict[str, Any]:
    """Unpack the connector's latest pipeline into ``pipelines_dir``; returns {pipeline_name, saved_at}."""
    with connect(url) as conn:
        row = conn.execute("SELECT pipeline_name, saved_at, archive FROM cai_pipeline_snapshots "
                           "WHERE connector_id = %s ORDER BY saved_at DESC LIMIT 1", (connector_id,)).fetchone()
    if row is None:
        raise NoSnapshot(connector_id)
    target = pipelines_dir / row["pipeline_name"]
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(bytes(row["archive"])), mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    for folder in ("load/new", "load/normalized", "load/loaded", "normalize"):  # what dlt expects to list
        (target / folder).mkdir(parents=True, exist_ok=True)
    return {"pipeline_name": row["pipeline_name"], "saved_at": row["saved_at"]}
