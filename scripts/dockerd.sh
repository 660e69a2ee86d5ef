# shellcheck shell=bash
# Sourced by the scripts that need Docker (scripts/sam-local.sh, scripts/container-image.sh):
# Docker from the distribution's docker.io when dockerd is missing, and a dockerd of their own on
# its own socket and data directory under the cache, stopped by its pid. Expects $cache and
# step(); sets DOCKER_HOST. The caller's EXIT trap calls stop_dockerd.
: "${cache:?set cache before sourcing scripts/dockerd.sh}"
dockerd_pid=""

start_dockerd() {
  if ! command -v dockerd >/dev/null; then
    step "installing Docker (docker.io)"
    apt-get update -qq && apt-get install -y -qq docker.io
  fi
  local dir="$cache/docker"
  mkdir -p "$dir/data" "$dir/exec"
  export DOCKER_HOST="unix://$dir/docker.sock"
  step "starting dockerd on $DOCKER_HOST"
  dockerd --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" -H "$DOCKER_HOST" >"$dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 100); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$dir/dockerd.log" >&2; exit 1; }
    sleep 0.2
  done
  docker info >/dev/null
}

# Containers first (a warm `sam local start-api` one, a check's), then the daemon.
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
  fi
}
