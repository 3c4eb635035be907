#!/usr/bin/env bash
# Build the worker image with podman from the distribution's packages and check it answers:
# `cai --help`, and `cai doctor` against a PostgreSQL (DATABASE_URL, default CI's 127.0.0.1:5432).
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
