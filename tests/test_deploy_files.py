"""The deployment files: Kubernetes manifests against Kubernetes' own schemas, the Dockerfile linted.

Nothing is applied to a cluster: each manifest is checked, strictly (unknown fields refused),
against the OpenAPI schemas of Kubernetes 1.37 that `kubernetes-validate` ships; the work pool's
base job template is rendered the way Prefect renders it (its variables' defaults plus what a
flow run adds) and the resulting Job is checked the same way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
VERSION = "1.37.0"
SEED_SECRETS = {"DATABASE_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("name", ["worker.yaml", "deploy-job.yaml", "secret.example.yaml", "nfs.example.yaml"])
def test_each_manifest_is_valid_kubernetes(name: str) -> None:
    documents = _documents(KUBERNETES / name)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, VERSION, strict=True)  # raises on any schema violation


def test_a_manifest_with_a_mistake_is_refused() -> None:
    """The check can fail: a misspelt field and a wrong type are caught."""
    worker = next(d for d in _documents(KUBERNETES / "worker.yaml") if d["kind"] == "Deployment")
    worker["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, VERSION, strict=True)
    worker = next(d for d in _documents(KUBERNETES / "worker.yaml") if d["kind"] == "Deployment")
    worker["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, VERSION, strict=True)


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]["template"]["spec"]
    return list(spec["containers"])


def test_the_worker_takes_credentials_from_secrets_and_runs_as_non_root() -> None:
    documents = _documents(KUBERNETES / "worker.yaml") + _documents(KUBERNETES / "deploy-job.yaml")
    workloads = [d for d in documents if d["kind"] in ("Deployment", "Job")]
    assert {d["kind"] for d in workloads} == {"Deployment", "Job"}
    literal = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"}
    assert not SEED_SECRETS & {key for data in literal.values() for key in data}  # no credential in a ConfigMap
    secret = _documents(KUBERNETES / "secret.example.yaml")[0]
    assert SEED_SECRETS | {"MINIO_ENDPOINT", "PREFECT_API_AUTH_STRING"} <= set(secret["stringData"])
    assert not {"PREFECT_API_AUTH_STRING"} & {key for data in literal.values() for key in data}
    for workload in workloads:
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in _containers(workload):
            assert {"secretRef": {"name": "cai-connectors"}} in container["envFrom"]
            assert not SEED_SECRETS & {e["name"] for e in container.get("env", [])}
    worker = next(d for d in workloads if d["kind"] == "Deployment")
    (container,) = _containers(worker)
    assert container["args"][:2] == ["cai", "worker"] and container["livenessProbe"]["httpGet"]["path"] == "/health"


def _rendered_job() -> dict[str, Any]:
    from prefect.utilities.templating import apply_values

    template = json.loads((KUBERNETES / "base-job-template.json").read_text())
    values = {name: spec["default"] for name, spec in template["variables"]["properties"].items()
              if spec.get("default") is not None}
    values.update(command=["prefect", "flow-run", "execute"], name="connector-7", env=[], labels={}, annotations={})
    return dict(apply_values(template["job_configuration"], values)["job_manifest"])


def test_worker_pods_and_run_pods_mount_ssh_keys_read_only_and_the_shared_nfs_folder() -> None:
    """What real connectors need on any pod: SFTP keys and known_hosts from a Secret, never writable, and
    the NFS share that folder sources read and NFS destinations write, from one ReadWriteMany claim."""
    worker = next(d for d in _documents(KUBERNETES / "worker.yaml") if d["kind"] == "Deployment")
    claims = {d["metadata"]["name"]: d for d in _documents(KUBERNETES / "nfs.example.yaml")
              if d["kind"] == "PersistentVolumeClaim"}
    secrets = {d["metadata"]["name"]: d for d in _documents(KUBERNETES / "secret.example.yaml")}
    assert {"id_ed25519", "known_hosts"} <= set(secrets["cai-ssh"]["stringData"])
    for pod in (worker["spec"]["template"]["spec"], _rendered_job()["spec"]["template"]["spec"]):
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        ssh = mounts["/etc/cai/ssh"]
        assert ssh["readOnly"] is True and volumes[ssh["name"]]["secret"]["secretName"] == "cai-ssh"
        assert volumes[ssh["name"]]["secret"]["defaultMode"] & 0o077 == 0o040  # the pod's group reads; no one writes
        data = mounts["/mnt/data"]
        claim = volumes[data["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims and claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_work_pool_base_job_template_renders_a_valid_job() -> None:
    from prefect.utilities.templating import apply_values

    template = json.loads((KUBERNETES / "base-job-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    variables = template["variables"]["properties"]
    placeholders = set(re.findall(r"{{ *(\w+) *}}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(variables), placeholders - set(variables)  # every placeholder is a variable
    values = {name: spec["default"] for name, spec in variables.items() if spec.get("default") is not None}
    # What the Kubernetes worker adds for a flow run: its command, name and Prefect's environment.
    values.update(command=["prefect", "flow-run", "execute"], name="connector-7",
                  env=[{"name": "PREFECT_API_URL", "value": "https://prefect.cai.svc:4200/api"}],
                  labels={"app": "cai"}, annotations={})
    rendered = apply_values(template["job_configuration"], values)
    job = rendered["job_manifest"]
    kubernetes_validate.validate(job, VERSION, strict=True)
    (container,) = _containers(job)
    assert container["envFrom"] == [{"secretRef": {"name": "cai-connectors"}}]
    assert container["image"] == "cai-connectors:latest"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_the_dockerfile_passes_hadolint_and_keeps_the_build_ca_out_of_the_image() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2 and stages[0].startswith("${BASE} AS build")
    assert re.search(r"^ARG SSL_CERT_FILE$", stages[0], re.M)  # declared without a default, in the build only
    assert "SSL_CERT_FILE" not in stages[1]
    assert re.search(r"^ARG BASE=python:3\.\d+-slim$", text, re.M)
    assert re.search(r"^USER 10001", stages[1], re.M) and "HEALTHCHECK" in stages[1]
    assert re.search(r'^CMD \["cai", "worker"', stages[1], re.M)
