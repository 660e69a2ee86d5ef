#!/usr/bin/env bash
# Builds the server-mode image offline and checks it: hadolint on the Dockerfile, the image from
# the release binary (deploy/container/rootfs.sh and deploy/container/Dockerfile.prebuilt, the
# Dockerfile's runtime stage: nothing is pulled), its size (at most 20 MB), then scripts/container-check.py runs it (start time, health
# check, non-root, read-only root, SIGTERM drains and flushes). Starts its own dockerd on its own
# socket and stops it afterwards (Docker from Debian's docker.io when missing).
# Run by scripts/test.sh with APUNTADOR_CONTAINER=1; needs the release binary and the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
binary="${APUNTADOR_BIN:-${CARGO_TARGET_DIR:-$cache/target}/release/apuntador-backend}"
step() { printf '\n==> %s\n' "$*"; }

step "hadolint, and the runtime stage of both Dockerfiles is the same"
hadolint Dockerfile deploy/container/Dockerfile.prebuilt
runtime_stage() { sed -n '/^# --- runtime stage/,$p' "$1" | grep -v '^COPY\|^# ---'; }
if ! diff <(runtime_stage Dockerfile) <(runtime_stage deploy/container/Dockerfile.prebuilt); then
  echo "the runtime stages of Dockerfile and deploy/container/Dockerfile.prebuilt differ" >&2
  exit 1
fi

# shellcheck source=scripts/dockerd.sh
. scripts/dockerd.sh
context=$(mktemp -d)
cleanup() {
  rm -rf "$context"
  stop_dockerd
}
trap cleanup EXIT
start_dockerd

step "docker build (offline: deploy/container/Dockerfile.prebuilt from $binary)"
deploy/container/rootfs.sh "$binary" "$context/rootfs"
cp deploy/container/Dockerfile.prebuilt "$context/Dockerfile"
docker build -q -t apuntador-backend:check "$context" >/dev/null
size=$(docker image inspect --format '{{.Size}}' apuntador-backend:check)
printf 'image size: %s bytes (%.1f MB)\n' "$size" "$(echo "$size / 1000000" | bc -l)"
if [ "$size" -gt 20000000 ]; then
  echo "the image is over 20 MB" >&2
  exit 1
fi

step "the image's CycloneDX SBOM (scripts/sbom.py image, into $cache/sbom)"
python3 scripts/sbom.py image "$binary" "$cache/sbom"

step "running the image (scripts/container-check.py)"
python3 scripts/container-check.py apuntador-backend:check
