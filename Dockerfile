# The worker image: a Prefect process worker on pool `default` that runs connectors.
#
#   podman build -t cai-connectors .                  # or docker build
#   podman run -e PREFECT_API_URL=http://prefect:4200/api -e DATABASE_URL=postgresql://... \
#     -e MINIO_ENDPOINT=http://minio:9000 -e MINIO_ACCESS_KEY=... -e MINIO_SECRET_KEY=... cai-connectors
#
# BASE is any Debian-family image: python:3.12-slim by default, or a base made locally with
# debootstrap where no registry is reachable (README "Deployment"; deploy/podman-smoke.sh). Where
# HTTPS to the package registries passes a proxy, pass its CA bundle as the build argument
# SSL_CERT_FILE (mounted into the build); it is used by the install steps only, never kept.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ARG SSL_CERT_FILE
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A base without Python (Debian minbase) gets the distribution's; python:*-slim already has one.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 python3-venv ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cai_common cai_common
COPY dlt_sources dlt_sources
COPY dlt_destinations dlt_destinations
COPY flows flows
# Bytecode is compiled here: user 10001 cannot write /opt/cai or /app, so without it every process
# (each warm process, each cold run, `cai --help`) would compile dlt and Prefect from source again.
# The flow's code stays at /app: the deployment's pull step runs flows from there (`cai deploy` in
# this image records /app), so the package is installed in editable mode against it.
RUN if [ -n "${SSL_CERT_FILE:-}" ]; then export PIP_CERT="$SSL_CERT_FILE"; else unset SSL_CERT_FILE; fi; \
    python3 -m venv /opt/cai \
    && /opt/cai/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "uv>=0.13,<0.14" \
    && /opt/cai/bin/uv pip install --quiet --no-cache --compile-bytecode --python /opt/cai/bin/python -e /app \
    && /opt/cai/bin/pip uninstall --quiet -y uv pip \
    && /opt/cai/bin/python -m compileall -q /app/cai_common /app/dlt_sources /app/dlt_destinations /app/flows

FROM ${BASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 10001 --user-group cai
COPY --from=build /opt/cai /opt/cai
COPY --from=build /app /app
COPY .dlt /app/.dlt
COPY deploy_flow.py prefect.yaml /app/
WORKDIR /app
ENV PATH=/opt/cai/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CAI_HOME=/home/cai/.cai \
    PREFECT_HOME=/home/cai/.prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    PREFECT_WORKER_WEBSERVER_PORT=8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["cai", "worker", "--healthcheck"]
