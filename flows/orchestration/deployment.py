"""The production deployment of `run_connector_pipeline`: work pool `default`, one schedule per connector.

`deploy()` is idempotent against `PREFECT_API_URL`: it creates the `default` process work pool if
missing, creates or updates the deployment `run_connector_pipeline/connector-pipeline` (flow code
pulled from this repository's folder by the worker), and makes the deployment's schedules match
the connectors' `schedule` column: one cron schedule per connector, slug `connector-<id>`, with
`connector_id` bound; a cron removed from the table removes its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.store.config_store import connect

WORK_POOL = "default"
WORK_QUEUE = "default"
DEPLOYMENT = "connector-pipeline"
FLOW_NAME = "run_connector_pipeline"
ENTRYPOINT = "flows/dlt_pipeline_flow.py:run_connector_pipeline"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Deployed:
    """What `deploy()` did: the deployment id and the schedules it now has, by connector."""

    deployment_id: str
    schedules: dict[int, str] = field(default_factory=dict)
    created_pool: bool = False


def connector_schedules(url: str | None = None) -> dict[int, str]:
    """connector id -> cron expression, for every connector with a `schedule`."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT id, schedule FROM cai_connectors WHERE COALESCE(btrim(schedule), '') <> '' ORDER BY id"
        ).fetchall()
    return {int(r["id"]): r["schedule"].strip() for r in rows}


def ensure_work_pool() -> bool:
    """Create the `default` process work pool unless it exists; True when created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(WORK_POOL)
            return False
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
            except ObjectAlreadyExists:  # another `cai deploy` won the race
                return False
            return True


FLOW_RUN_COMMAND = "python -m flows.orchestration.warm"
"""What the process worker starts for a flow run (also in prefect.yaml): one process running the flow.

Prefect's default starts a supervisor process that resolves the flow's workspace, which then starts
`python -m prefect.engine`: two fresh interpreters importing Prefect per run. The flow's code is on
the worker's disk already (the pull step sets the folder), so the engine alone does, and
`flows.orchestration.warm` hands the run to the worker's warm process (a fork, imports done) or
runs `prefect.engine` itself. `python` is the worker's: `cai worker` puts its interpreter's folder
first on PATH (the image's PATH has it too); start a bare `prefect worker` from the activated venv.
"""


def deploy(url: str | None = None) -> Deployed:
    """Create or update the deployment and its per-connector schedules (see the module docstring)."""
    from prefect import flow
    from prefect.schedules import Cron

    created = ensure_work_pool()
    wanted = connector_schedules(url)
    source: Any = flow.from_source(source=str(ROOT), entrypoint=ENTRYPOINT)
    deployment_id = source.deploy(
        name=DEPLOYMENT,
        work_pool_name=WORK_POOL,
        work_queue_name=WORK_QUEUE,
        schedules=[Cron(cron, timezone="UTC", parameters={"connector_id": cid}, slug=f"connector-{cid}")
                   for cid, cron in wanted.items()],
        tags=["cai"],
        job_variables={"command": FLOW_RUN_COMMAND},
        description="Runs one connector (parameter connector_id) and records the run in cai_connector_runs.",
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,  # the process-pool hint: this is the intended production setup
    )
    _drop_stale_schedules(str(deployment_id), set(wanted))
    return Deployed(str(deployment_id), wanted, created)


def _drop_stale_schedules(deployment_id: str, connector_ids: set[int]) -> None:
    """Delete schedules of connectors that no longer carry a cron (whatever the update kept)."""
    from uuid import UUID

    from prefect import get_client

    with get_client(sync_client=True) as client:
        for schedule in client.read_deployment_schedules(UUID(deployment_id)):
            cid = (schedule.parameters or {}).get("connector_id")
            if cid is None or int(cid) not in connector_ids:
                client.delete_deployment_schedule(UUID(deployment_id), schedule.id)

