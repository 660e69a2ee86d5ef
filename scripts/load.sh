#!/usr/bin/env bash
# Load and faults, measured (tests/e2e/load.rs): the release binary under sustained load in
# server mode and under the Runtime API double, while the provider, AWS (moto) and the
# collector are slowed or broken in turn. LOAD_SECONDS (default 60) is each phase's length,
# LOAD_CLIENTS (default 32) the concurrent clients; eight phases a mode, two modes. The tables
# go to $APUNTADOR_CACHE/bench-results/load.md (docs/benchmark.md quotes them). Needs what
# scripts/test.sh installs (moto in its virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export MOTO_SERVER="$cache/venv/bin/moto_server"
[ -x "$MOTO_SERVER" ] || { echo "no moto at $MOTO_SERVER: run scripts/test.sh once" >&2; exit 1; }
export LOAD_SECONDS="${LOAD_SECONDS:-60}"
out="$cache/bench-results/load.md"
mkdir -p "$cache/bench-results"
cargo build --locked --release --bin apuntador-backend
export APUNTADOR_BIN="$CARGO_TARGET_DIR/release/apuntador-backend"
{
  echo "# Load and faults $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Machine: $(nproc) cores, $(uname -m); LOAD_SECONDS=$LOAD_SECONDS, LOAD_CLIENTS=${LOAD_CLIENTS:-32}"
} > "$out"
# One test at a time: each takes the machine.
cargo test --locked --release --test e2e load:: -- --ignored --test-threads=1 --nocapture 2>&1 \
  | tee /dev/stderr | grep -E '^(\||server mode|Runtime API|$)' >> "$out"
cat "$out"
