#!/usr/bin/env bash
# Measures what a Lambda user pays (see benches/lambda.rs) and the artefact sizes, and writes
# $APUNTADOR_CACHE/bench-results/latest.md (outside the clone, like the other caches). Needs what scripts/test.sh installs, plus wrk (installed here).
#
# A variant of the release profile is measured by overriding it from the environment, e.g.
#   CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
#   BENCH_NAME=thin-cu16 scripts/bench.sh
# BENCH_ZIP=0 skips the arm64 zip (a second full build); BENCH_INVOCATIONS (default 1000) sets
# the measured invocations per setting.
# BENCH_NAME names the report (bench-results/<name>.md) and keeps the variant's build in its own
# target directories; BENCH_FEATURES passes cargo features (e.g. mimalloc).
# scripts/bench-profiles.sh runs every variant docs/benchmark.md compares.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
name="${BENCH_NAME:-latest}"
if [ "$name" = latest ] || [ "$name" = shipped ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
  lambda_target="$cache/target-lambda"
  zip_dir="$cache/zip"
else
  export CARGO_TARGET_DIR="$cache/target-bench-$name"
  lambda_target="$cache/target-lambda-$name"
  zip_dir="$cache/zip-$name"
fi
features=()
[ -n "${BENCH_FEATURES:-}" ] && features=(--features "$BENCH_FEATURES")
venv="$cache/venv"
out="$cache/bench-results/$name.md"
mkdir -p "$cache/bench-results"

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi

{
  echo "# Benchmark $name $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); rustc $(rustc --version | cut -d' ' -f2)"
  echo
  echo "Profile: $(env | grep '^CARGO_PROFILE_RELEASE_' | sort | tr '\n' ' ')features: ${BENCH_FEATURES:-none}"
  echo
} > "$out"

cargo build --locked --release --bin apuntador-backend "${features[@]}"
bin="$CARGO_TARGET_DIR/release/apuntador-backend"
echo "Stripped release binary ($(uname -m)): $(stat -c %s "$bin") bytes" >> "$out"
# The binary deflated as a Lambda zip stores it: compares variants without an arm64 build each.
zipped=$(python3 - "$bin" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
)
echo "Same binary zipped (deflate): $zipped bytes" >> "$out"
if [ -x "$venv/bin/cargo-lambda" ] && [ "${BENCH_ZIP:-1}" = 1 ]; then
  PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$lambda_target" \
    cargo lambda build --release --arm64 --output-format zip --lambda-dir "$zip_dir" "${features[@]}" >/dev/null 2>&1 \
    && echo "arm64 deployment zip (cargo lambda): $(stat -c %s "$zip_dir/apuntador-backend/bootstrap.zip") bytes" >> "$out"
fi
echo >> "$out"

# The latency runs measure the binary built above; --profile release reuses its dependencies.
APUNTADOR_BIN="$bin" cargo bench --locked --profile release --bench lambda "${features[@]}" 2>/dev/null | grep '^|' >> "$out"
# The floor of one traced server-mode request, piece by piece, in-process (benches/span_cost.rs).
{
  echo
  echo "Telemetry of one traced request, in-process (benches/span_cost.rs):"
  echo
  cargo bench --locked --profile release --bench span_cost "${features[@]}" | grep '^|'
  echo
  echo "Verifying one attestation, in-process (benches/attestation.rs):"
  echo
  cargo bench --locked --profile release --bench attestation "${features[@]}" | grep '^|'
} >> "$out"
cat "$out"
