"""Runs triggered the way the platform's backend triggers them: over the Prefect REST API.

`POST {PREFECT_API_URL}/deployments/{id}/create_flow_run` with `{"parameters": {"connector_id": N}}`;
a worker on the `default` pool picks the run up. `wait()` polls the flow run until it ends.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from flows.orchestration.deployment import DEPLOYMENT, FLOW_NAME

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api_url() -> str:
    """The Prefect API this process talks to (`PREFECT_API_URL`)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set: point it at the Prefect server (e.g. http://host:4200/api)")
    return str(url).rstrip("/")


def _session() -> requests.Session:
    """A session whose requests urllib3 retries (4 more times, 0.5 s doubling, honouring Retry-After)
    on connection errors and on 429/502/503/504: a SQLite-backed Prefect server answers 503 while its
    database is locked under load."""
    retry = Retry(total=4, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def call(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One Prefect API request, retried while the server is busy or briefly away (see `_session`)."""
    with _session() as session:
        return session.request(method, url, headers=_headers(), timeout=30, **kwargs)


def _headers() -> dict[str, str]:
    from prefect.settings import PREFECT_API_KEY

    key = PREFECT_API_KEY.value()
    return {"Authorization": f"Bearer {key.get_secret_value() if hasattr(key, 'get_secret_value') else key}"} \
        if key else {}


def deployment_id(api: str | None = None) -> str:
    """The id of `run_connector_pipeline/connector-pipeline` (created by `cai deploy`)."""
    api = api or api_url()
    response = call("GET", f"{api}/deployments/name/{FLOW_NAME}/{DEPLOYMENT}")
    if response.status_code == 404:
        raise LookupError(f"no deployment `{FLOW_NAME}/{DEPLOYMENT}` on {api}: run `cai deploy` first")
    response.raise_for_status()
    return str(response.json()["id"])


def trigger(connector_id: int, api: str | None = None) -> str:
    """Create a flow run of the deployment for one connector; returns the flow-run id."""
    api = api or api_url()
    response = call("POST", f"{api}/deployments/{deployment_id(api)}/create_flow_run",
                     json={"parameters": {"connector_id": connector_id}})
    response.raise_for_status()
    return str(response.json()["id"])


def flow_run(flow_run_id: str, api: str | None = None) -> dict[str, Any]:
    """The flow run as the API returns it."""
    response = call("GET", f"{api or api_url()}/flow_runs/{flow_run_id}")
    response.raise_for_status()
    return dict(response.json())


def wait(flow_run_id: str, timeout: float = 3600, api: str | None = None, poll: float = 1.0) -> dict[str, Any]:
    """Poll until the flow run reaches a final state; returns the flow run (TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        run = flow_run(flow_run_id, api)
        if (run.get("state") or {}).get("type") in FINAL_STATES:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} still {run.get('state', {}).get('type')} after {timeout:.0f} s")
        time.sleep(poll)
