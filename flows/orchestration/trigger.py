"""Runs triggered the way the platform's backend triggers them, through Prefect's own client.

`trigger()` creates a flow run of the deployment `run_connector_pipeline/connector-pipeline` with
`{"connector_id": N}` (what the backend's `POST /deployments/{id}/create_flow_run` does); a worker on
pool `default` picks it up. `wait()` polls the flow run until it ends. Prefect's client retries a
busy server (429, 502, 503) and connection errors by itself.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID, uuid4

from flows.orchestration.deployment import DEPLOYMENT, FLOW_NAME

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api_url() -> str:
    """The Prefect API this process talks to (`PREFECT_API_URL`)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set: point it at the Prefect server (e.g. http://host:4200/api)")
    return str(url).rstrip("/")


def health() -> str:
    """The API answers `/health` (raises what the client met otherwise)."""
    from prefect import get_client

    api_url()
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise problem
    return "healthy"


def deployment_id() -> str:
    """The id of `run_connector_pipeline/connector-pipeline` (LookupError before `cai deploy`)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT}").id)
        except ObjectNotFound:
            where = f"`{FLOW_NAME}/{DEPLOYMENT}` on {api_url()}"
            raise LookupError(f"no deployment {where}: run `cai deploy` first") from None


def trigger(connector_id: int, idempotency_key: str | None = None) -> str:
    """Create a flow run of the deployment for one connector; returns the flow-run id.

    Every call carries an idempotency key (a new one unless given): Prefect creates one flow run per
    key and deployment and answers a repeated call with that run, so a request retried after a lost
    answer (the client's own retries on 429/502/503, or a caller retrying with its key) never starts
    a second run.
    """
    from prefect import get_client

    deployment = UUID(deployment_id())
    key = idempotency_key or f"cai-trigger-{connector_id}-{uuid4()}"
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment, parameters={"connector_id": connector_id},
                                                     idempotency_key=key)
    return str(run.id)


def flow_run(flow_run_id: str) -> dict[str, Any]:
    """The flow run as the API returns it (JSON types)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_flow_run(UUID(flow_run_id)).model_dump(mode="json"))


def wait(flow_run_id: str, timeout: float = 3600, poll: float = 1.0) -> dict[str, Any]:
    """Poll until the flow run reaches a final state; returns the flow run (TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        run = flow_run(flow_run_id)
        if (run.get("state") or {}).get("type") in FINAL_STATES:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} still {run.get('state', {}).get('type')} after {timeout:.0f} s")
        time.sleep(poll)
