#!/usr/bin/env bash
# `sam local` as a user runs it (README "Try it with SAM"): `sam build`, `sam local invoke` of
# every file in events/ with the parameters samconfig.toml supplies, then `sam local start-api`
# and the curl calls of the README, each answer checked by scripts/sam-local-check.py.
#
# Opt-in (it needs Docker): APUNTADOR_SAM_LOCAL=1 scripts/test.sh runs it after the other checks,
# or run it alone after scripts/test.sh has installed the test tools. It installs Docker from the
# distribution's packages if dockerd is missing, starts its own dockerd on its own socket and
# data directory under the cache, and stops it (by its pid) when done.
#
# Offline stand-in: public.ecr.aws/lambda/provided:al2023 cannot be pulled here, so this script
# builds a minimal local STAND-IN under that tag (busybox plus the C library files the bootstrap
# links; SAM adds the emulator itself) and runs SAM with --skip-pull-image. It never replaces a
# real image: if the tag already exists it is used as it is. With registry access, remove
# --skip-pull-image (APUNTADOR_SAM_PULL=1) and SAM uses the real image. The collector layer is
# left out by the local parameters (TelemetryTransport=none), as for every sam local run.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
venv="$cache/venv"
export PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0
step() { printf '\n==> %s\n' "$*"; }

case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "no Lambda base image for $(uname -m)" >&2; exit 1 ;;
esac
image="public.ecr.aws/lambda/provided:al2023-$arch"

# shellcheck source=scripts/dockerd.sh
. scripts/dockerd.sh
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  stop_dockerd
}
trap cleanup EXIT
start_dockerd

local_params() {
  python3 -c 'import sys, tomllib; print(tomllib.load(open("samconfig.toml", "rb"))["default"][sys.argv[1]]["parameters"]["parameter_overrides"])' "$1"
}
# samconfig.toml's own parameters, plus this machine's architecture (no arm64 emulation here).
invoke_params="$(local_params local_invoke) Architecture=\"$arch\""
api_params="$(local_params local_start_api) Architecture=\"$arch\""

# The user's commands, in the clone: `sam build` writes .aws-sam/build, which `sam local` then
# finds with samconfig.toml beside template.yaml. Only cargo's target directory is kept in the
# cache, so a second run does not compile everything again.
export CARGO_TARGET_DIR="${APUNTADOR_LAMBDA_TARGET:-$cache/target-lambda}"
step "sam build (Architecture=$arch)"
start=$(date +%s)
sam build --parameter-overrides "$invoke_params" >"$cache/sam-local-build.log" 2>&1 ||
  { cat "$cache/sam-local-build.log" >&2; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
bootstrap=.aws-sam/build/BackendFunction/bootstrap
test -x "$bootstrap"

pull=(--skip-pull-image)
if [ "${APUNTADOR_SAM_PULL:-0}" = "1" ]; then
  pull=()
elif [ "$(docker image inspect -f '{{index .Config.Labels "apuntador.stand-in"}}' "$image" 2>/dev/null || echo absent)" != "" ]; then
  # Absent, or a stand-in of an earlier run (rebuilt: it must match this bootstrap's libraries).
  # A real image under the tag (no such label) is left alone and used.
  step "building the local STAND-IN for $image (busybox + the C library the bootstrap links)"
  rootfs=$(mktemp -d)
  if ! command -v busybox >/dev/null || ! busybox --list >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq busybox-static
  fi
  mkdir -p "$rootfs"/{bin,tmp,var/task,var/runtime,var/rapid,opt,etc,proc,sys,dev}
  chmod 1777 "$rootfs/tmp"
  cp "$(command -v busybox)" "$rootfs/bin/busybox"
  for tool in $("$rootfs/bin/busybox" --list); do
    [ "$tool" = busybox ] || ln -s busybox "$rootfs/bin/$tool"
  done
  # Every library the bootstrap loads, at the path the loader looks for it.
  for lib in $(ldd "$bootstrap" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  tar -C "$rootfs" -c . |
    docker import --change 'LABEL apuntador.stand-in="busybox and the host C library, not the AWS image"' - "$image" >/dev/null
  rm -rf "$rootfs"
fi

step "sam local invoke, every event in events/"
python3 scripts/sam-local-check.py invoke --parameter-overrides "$invoke_params" "${pull[@]}"

step "sam local start-api on 127.0.0.1:3000"
sam local start-api --parameter-overrides "$api_params" "${pull[@]}" \
  >"$cache/sam-local-start-api.log" 2>&1 &
api_pid=$!
python3 scripts/sam-local-check.py start-api --url http://127.0.0.1:3000 --log "$cache/sam-local-start-api.log"

step "sam local checks passed"
