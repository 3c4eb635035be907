#!/usr/bin/env bash
# Build the worker image with podman from the distribution's packages and check it works: `cai --help`,
# `cai init-db` and `cai doctor` against a PostgreSQL (SMOKE_DATABASE_URL, default CI's 127.0.0.1:5432),
# then the image's default command as a worker running two triggered connector runs.
#
#   bash deploy/podman-smoke.sh            # CI runs this
#
# No container registry is needed: the base is made here with debootstrap (Debian bookworm minbase,
# from the mirror apt already uses) and imported as localhost/debian-base:bookworm. Where HTTPS to
# the package registries passes a proxy, the host's CA bundle is handed to the build's install
# steps as the SSL_CERT_FILE build argument (mounted read-only, never copied into the image).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${CAI_IMAGE:-localhost/cai-connectors:smoke}
BASE_IMAGE=localhost/debian-base:bookworm
DATABASE_URL=${SMOKE_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
HOST_CA=/etc/ssl/certs/ca-certificates.crt

need=()
for tool in podman buildah debootstrap runc; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
fi

# Podman's defaults trip on this kind of host (../shared/STACK.md "Containers"): crun refuses
# hybrid cgroups, and the default ulimits exceed what the sandbox allows.
conf=$(mktemp)
cat > "$conf" <<'CONF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
CONF
export CONTAINERS_CONF=$conf

if ! podman image exists "$BASE_IMAGE"; then
  mirror=$(grep -h -m1 -oE '^URIs: *http[^ ]+/debian/?$' /etc/apt/sources.list.d/* 2>/dev/null | head -n1 | sed 's/^URIs: *//')
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d)
  echo "making $BASE_IMAGE with debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  tar -C "$root" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi

build_args=(--build-arg "BASE=$BASE_IMAGE")
if [ -f "$HOST_CA" ]; then
  build_args+=(--build-arg SSL_CERT_FILE=/run/host-ca.crt -v "$HOST_CA:/run/host-ca.crt:ro")
fi
started=$(date +%s)
podman build --quiet --format docker --network host "${build_args[@]}" -t "$IMAGE" . >/dev/null
echo "image built in $(( $(date +%s) - started )) s: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"

help=$(podman run --rm --no-healthcheck --network host "$IMAGE" cai --help)
echo "$help" | grep -q "Usage: cai" || { echo "cai --help failed in the image" >&2; exit 1; }
echo "cai --help answers ($(echo "$help" | grep -c '│') lines)"
echo "healthcheck: $(podman image inspect "$IMAGE" --format '{{.Config.Healthcheck.Test}}')"
echo "image user: $(podman run --rm --no-healthcheck "$IMAGE" id -u)"
# Every module a run imports loads from bytecode compiled at build time: the image's user cannot
# write it, so a module without it would be compiled from source again by every process.
podman run --rm --no-healthcheck "$IMAGE" python3 -c '
import os, sys, time
t = time.perf_counter()
import flows.dlt_pipeline_flow, flows.paths.load_csv, flows.paths.transfers, dlt_sources.sql_database.readers  # noqa
took = time.perf_counter() - t
missing = sorted(m.__name__ for m in list(sys.modules.values())
                 if getattr(m, "__cached__", None) and not os.path.exists(m.__cached__))
print(f"{len(sys.modules)} modules imported in {took:.2f} s, {len(missing)} without bytecode")
sys.exit(f"no bytecode for: {missing[:10]}" if missing else 0)
' || { echo "the image compiles modules at run time" >&2; exit 1; }
# (the build's mount point stays as an empty file; its content and the variable must not)
if podman run --rm --no-healthcheck "$IMAGE" sh -c 'test -s /run/host-ca.crt || env | grep -q SSL_CERT_FILE'; then
  echo "the build's CA bundle leaked into the image" >&2; exit 1
fi
# A config store of its own: the image creates the schema, then checks it.
store="cai_smoke_$$"
psql -q "$DATABASE_URL" -c "CREATE DATABASE $store"
trap 'psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $store WITH (FORCE)" || true' EXIT
store_url="${DATABASE_URL%/*}/$store"
podman run --rm --no-healthcheck --network host -e DATABASE_URL="$store_url" "$IMAGE" cai init-db
out=$(podman run --rm --no-healthcheck --network host -e DATABASE_URL="$store_url" -e COLUMNS=200 "$IMAGE" cai doctor || true)
echo "$out"
echo "$out" | grep -E "config database .*OK" >/dev/null || { echo "cai doctor in the image did not reach PostgreSQL" >&2; exit 1; }

# Without the shared config store the image's default command (the worker) refuses to start, in one line:
# no embedded database inside a pod, recording runs the platform never sees.
if refused=$(podman run --rm --no-healthcheck "$IMAGE" 2>&1); then
  echo "the image's worker started without DATABASE_URL" >&2; exit 1
fi
echo "$refused" | grep -qF 'needs `DATABASE_URL`' || { echo "the worker's refusal did not name DATABASE_URL: $refused" >&2; exit 1; }
echo "without DATABASE_URL the image's worker refuses: ${refused:0:60}..."

# The image as the platform runs it: its default command is the worker; a run triggered through the
# Prefect API is picked up by the worker in the container, runs there (warm), and records success.
prefect_home=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port/api"
# Locked down as a fleet runs it: the server takes only callers with its auth string.
auth="cai-smoke:pass-$$-$RANDOM"
podman run -d --name "cai-smoke-server-$$" --no-healthcheck --network host -e PREFECT_HOME=/tmp/prefect \
  -e PREFECT_SERVER_API_AUTH_STRING="$auth" "$IMAGE" prefect server start --host 127.0.0.1 --port "$port" >/dev/null
worker=""
cleanup() {
  [ -n "$worker" ] && podman rm -f "$worker" >/dev/null 2>&1
  podman rm -f "cai-smoke-server-$$" >/dev/null 2>&1
  rm -rf "$prefect_home"
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $store WITH (FORCE)" || true
}
trap cleanup EXIT
for _ in $(seq 1 120); do python3 -c "import urllib.request; urllib.request.urlopen('$api/health', timeout=2)" 2>/dev/null && break; sleep 1; done
status=$(python3 -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request('$api/flow_runs/filter', data=b'{}', method='POST',
                                                  headers={'Content-Type': 'application/json'}), timeout=10)
    print(200)
except urllib.error.HTTPError as exc:
    print(exc.code)")
[ "$status" = "401" ] || { echo "the Prefect API answered $status to a caller without credentials" >&2; exit 1; }
echo "the Prefect API refuses callers without its auth string (401)"
in_image=(podman run --rm --no-healthcheck --network host -e DATABASE_URL="$store_url" -e PREFECT_API_URL="$api"
          -e PREFECT_API_AUTH_STRING="$auth")
deployed=$("${in_image[@]}" "$IMAGE" cai deploy)
echo "${deployed%%$'\n'*}"
psql -q "$store_url" <<SQL
INSERT INTO cai_defined_sources (name, source_type_lookup_code_id, config)
SELECT 'smoke query', id, '{"connection_string": "$store_url", "allow_superuser": true, "query": "SELECT 7 AS n, ''00123''::text AS mrn"}'
FROM ad_lookup_codes WHERE lookup_type = 'source_type' AND lookup_code = 'sql_database';
INSERT INTO cai_defined_destinations (name, destination_type_lookup_code_id, config)
SELECT 'smoke table', id, '{"connection_string": "$store_url", "schema": "smoke", "table_name": "ping"}'
FROM ad_lookup_codes WHERE lookup_type = 'destination_type' AND lookup_code = 'postgres';
INSERT INTO cai_connectors (name, defined_source_id, defined_destination_id)
SELECT 'smoke', (SELECT max(id) FROM cai_defined_sources), (SELECT max(id) FROM cai_defined_destinations);
SQL
connector=$(psql -Atq "$store_url" -c "SELECT max(id) FROM cai_connectors")
worker=$(podman run -d --network host -e DATABASE_URL="$store_url" -e PREFECT_API_URL="$api" \
  -e PREFECT_API_AUTH_STRING="$auth" "$IMAGE")
started=$(date +%s)
"${in_image[@]}" "$IMAGE" cai trigger "$connector" --wait --timeout 240
echo "triggered run done in $(( $(date +%s) - started )) s (worker start included)"
[ "$(psql -Atq "$store_url" -c "SELECT mrn FROM smoke.ping")" = "00123" ] || { echo "the run's row is not in smoke.ping" >&2; exit 1; }
first=$(psql -Atq "$store_url" -c "SELECT metrics->>'process_start' FROM cai_connector_runs ORDER BY id DESC LIMIT 1")
echo "first run started: $first"
# The worker polls only once its warm process listens: every run forks from it, the first too.
[ "$first" = "warm" ] || { echo "the first run did not start warm" >&2; exit 1; }
started=$(date +%s)
"${in_image[@]}" "$IMAGE" cai trigger "$connector" --wait --timeout 240 >/dev/null
start=$(psql -Atq "$store_url" -c "SELECT metrics->>'process_start' FROM cai_connector_runs ORDER BY id DESC LIMIT 1")
echo "second run done in $(( $(date +%s) - started )) s, started $start"
[ "$start" = "warm" ] || { echo "the second run did not start warm" >&2; exit 1; }
podman exec "$worker" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)" \
  && echo "worker /health answers (the image's HEALTHCHECK)"
