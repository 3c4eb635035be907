"""What every data path shares: its outcome, where dlt keeps pipelines, the loaded-files ledger."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.pipeline.pipeline import Pipeline

from cai_common.configuration import server_location
from cai_common.settings import settings
from dlt_destinations.postgres import PostgresDestinationConfig, postgres
from dlt_sources.filesystem import LEDGER_KEY, RESOURCE_NAME
from flows.store.config_store import database_url
from flows.store.connector_config import ConnectorConfig
from flows.store.embedded import data_dir

DLT_DEFAULTS = {
    "RUNTIME__LOG_LEVEL": "WARNING",
    "RUNTIME__DLTHUB_TELEMETRY": "false",  # no outbound calls a clinical worker was not configured to make
    # Intermediate files are read once, on this machine: gzipping them cost 29 of 36 s of a table -> table run.
    "DATA_WRITER__DISABLE_COMPRESSION": "true",
    # Arrow batches are typed already, and worker processes would each hold the schema on a 2-core box.
    "NORMALIZE__WORKERS": "1",
    "LOAD__WORKERS": "2",  # parallel COPY jobs: what a 2-core worker keeps busy
}
"""dlt settings of every pipeline, applied wherever the product runs (a worker, a container, any current
directory: dlt reads `.dlt/config.toml` only in the current one). A variable already set wins."""


def apply_dlt_defaults() -> None:
    """Set `DLT_DEFAULTS` in this process's environment where the operator set nothing, and have dlt
    parse connection strings with its own URL parser.

    dlt parses a connection string with SQLAlchemy's `make_url` whenever SQLAlchemy is importable, and
    Prefect installs it: 0.35 s of imports in every process that names a database, for a URL. dlt's
    `sql_alchemy_shims` is the same parser (SQLAlchemy's code, kept by dlt for installs without it);
    nothing here hands dlt's URL objects to SQLAlchemy.
    """
    for name, value in DLT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    compat = "dlt.common.libs.sql_alchemy_compat"
    if compat not in sys.modules:
        from dlt.common.libs import sql_alchemy_shims

        shim = types.ModuleType(compat, "dlt's URL parser, without importing SQLAlchemy")
        shim.URL, shim.make_url = sql_alchemy_shims.URL, sql_alchemy_shims.make_url  # type: ignore[attr-defined]
        sys.modules[compat] = shim


apply_dlt_defaults()


@dataclass
class PathOutcome:
    """What one data path did: rows, a one-paragraph summary and the metrics for the run record."""

    rows: int
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)


def pipelines_dir() -> Path:
    """Where dlt keeps pipeline state and traces: `CAI_PIPELINES_DIR` or `<cai data dir>/pipelines`."""
    return Path(settings().pipelines_dir or data_dir() / "pipelines")


def pipeline_name_for(connector: ConnectorConfig) -> str:
    """The dlt pipeline of a connector: `connector_<id>_<12 hex>`, one per config store, connector, and
    source and destination (kind and location; for PostgreSQL also schema and table).

    dlt keeps a pipeline's state (the ledger of files already loaded or copied) under its name, so
    pointing a connector at another database, schema, table, folder, bucket or endpoint starts a new
    pipeline that sends everything there, while the old target's state stays with the old name. Two
    config stores served by one worker never share a pipeline. Only a hash of the locations is in
    the name: a REST URL may carry a token.
    """
    identity = {
        "config_store": server_location(database_url()),
        "connector_id": connector.connector_id,
        "source": [connector.source_type, connector.source.location()],
        "destination": [connector.destination_type, connector.destination.location()],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"connector_{connector.connector_id}_{digest}"


def postgres_pipeline(
    pipeline_name: str, target: PostgresDestinationConfig, *, delimiter: str = ",", encoding: str = "utf-8"
) -> Pipeline:
    """A dlt pipeline into the target schema, its state synced from the destination first.

    Syncing means a worker that never ran this connector starts from the state the last run left
    in the destination (e.g. the loaded-files ledger), not from nothing.
    """
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        pipelines_dir=str(pipelines_dir()),
        destination=postgres(target, delimiter=delimiter, encoding=encoding),
        dataset_name=target.schema_name,
    )
    pipeline.sync_destination()
    return pipeline


def legacy_name(connector: ConnectorConfig) -> str:
    """The pipeline name versions before per-target identity used: `connector_<id>`."""
    return f"connector_{connector.connector_id}"


def adopt_legacy_ledger(pipeline: Pipeline, legacy: str, resource: str = RESOURCE_NAME,
                        legacy_destination: str | None = None) -> int:
    """Give a pipeline with no ledger yet the ledger its predecessor (named ``legacy``) left for this target.

    A pipeline loading into PostgreSQL takes the ledger the legacy pipeline stored in the same
    destination dataset (so it is this target's). A file pipeline (no state in its destination) takes
    the legacy pipeline's local state when it delivered to the same destination kind
    (``legacy_destination``). Without this, upgrading would load or send every file once more.

    Returns:
        How many files the adopted ledger lists (0 when there was nothing to adopt).
    """
    if files_ledger(pipeline.state, resource) is not None:
        return 0
    legacy_state: Any = None
    if legacy_destination is None:
        # dlt restores the legacy pipeline's state from this destination dataset into a scratch folder.
        with tempfile.TemporaryDirectory() as scratch:
            old = dlt.pipeline(pipeline_name=legacy, pipelines_dir=scratch, destination=pipeline.destination,
                               dataset_name=pipeline.dataset_name)
            old.sync_destination()
            legacy_state = old.state
    elif (Path(pipeline.pipelines_dir) / legacy / "state.json").exists():
        old = dlt.attach(pipeline_name=legacy, pipelines_dir=pipeline.pipelines_dir)
        if old.state.get("destination_name") == legacy_destination:
            legacy_state = old.state
    ledger = files_ledger(legacy_state, resource) if legacy_state else None
    if not ledger:
        return 0
    # Saved locally; the next extract carries it to the destination with the run's own changes.
    remember_files(pipeline, dict(ledger), resource)
    return len(ledger)


def remember_files(pipeline: Pipeline, stamps: dict[str, Any], resource: str = RESOURCE_NAME) -> None:
    """Add files (URL -> stamp) to the pipeline's ledger and save the state (locally; the next load
    package carries it to a destination that keeps state)."""
    if not stamps:
        return
    with pipeline.managed_state() as state:
        ledger = files_ledger(state, resource)
        if ledger is None:
            source = state.setdefault("sources", {}).setdefault(pipeline.default_schema_name or pipeline.pipeline_name,
                                                                 {})
            ledger = source.setdefault("resources", {}).setdefault(resource, {}).setdefault(LEDGER_KEY, {})
        ledger.update(stamps)


def files_ledger(state: Any, resource: str = RESOURCE_NAME) -> dict[str, Any] | None:
    """The loaded-files ledger inside a pipeline state, wherever dlt keeps the resource's state."""
    for source_state in (state.get("sources") or {}).values():
        resource_state = (source_state.get("resources") or {}).get(resource)
        if resource_state is not None:
            return resource_state.setdefault(LEDGER_KEY, {})
    return None


def forget_files(
    pipeline: Pipeline, file_urls: list[str], before: dict[str, Any], resource: str = RESOURCE_NAME
) -> None:
    """Put these files' ledger entries back as they were before the run, so the next run retries them."""
    with pipeline.managed_state(extract_state=True) as state:
        ledger = files_ledger(state, resource)
        if ledger is None:
            return
        for url in file_urls:
            if url in before:
                ledger[url] = before[url]
            else:
                ledger.pop(url, None)
