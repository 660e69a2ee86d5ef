#!/usr/bin/env bash
# Measures what a Lambda user pays (see benches/lambda.rs) and the artefact sizes, and writes
# bench/results/latest.md. Needs what scripts/test.sh installs, plus wrk (installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
venv="$cache/venv"
out=bench/results/latest.md
mkdir -p bench/results

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi

{
  echo "# Benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); rustc $(rustc --version | cut -d' ' -f2)"
  echo
} > "$out"

cargo build --locked --release --bin apuntador-backend
bin="$CARGO_TARGET_DIR/release/apuntador-backend"
echo "Stripped release binary ($(uname -m)): $(stat -c %s "$bin") bytes" >> "$out"
if [ -x "$venv/bin/cargo-lambda" ]; then
  PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$cache/target-lambda" \
    cargo lambda build --release --arm64 --output-format zip --lambda-dir "$cache/zip" >/dev/null 2>&1 \
    && echo "arm64 deployment zip (cargo lambda): $(stat -c %s "$cache/zip/apuntador-backend/bootstrap.zip") bytes" >> "$out"
fi
echo >> "$out"

cargo bench --locked --bench lambda 2>/dev/null | grep '^|' >> "$out"
cat "$out"
