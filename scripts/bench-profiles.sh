#!/usr/bin/env bash
# Runs scripts/bench.sh once per release-profile variant docs/benchmark.md compares, one after another
# (nothing else should load the CPU meanwhile), each in its own target directories, and writes
# $APUNTADOR_CACHE/bench-results/<variant>.md. Pass variant names to run only those. Takes ~10 min per variant
# on 2 cores (a release build from scratch, then the measurements).
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
  local name=$1; shift
  if [ "${#selected[@]}" -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then return; fi
  echo "== $name: $*" >&2
  env BENCH_NAME="$name" "$@" scripts/bench.sh
}

selected=("$@")
# What Cargo.toml ships: opt-level "s", fat LTO, one codegen unit, stripped, unwind.
run shipped
# The variants skip the arm64 build (BENCH_ZIP=0); the x86_64 binary's zipped size compares them.
run fat-cu16 BENCH_ZIP=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
run thin-cu16 BENCH_ZIP=0 CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
run nolto-cu16 BENCH_ZIP=0 CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
run mimalloc BENCH_ZIP=0 BENCH_FEATURES=mimalloc
run opt3 BENCH_ZIP=0 CARGO_PROFILE_RELEASE_OPT_LEVEL=3
