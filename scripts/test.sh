#!/usr/bin/env bash
# Runs every check of the project on a fresh machine or a warm one:
#   formatting, clippy, unit + router + end-to-end tests (release binary under the AWS Lambda
#   Runtime Interface Emulator and under a Runtime API double, with an OTLP receiver), and the
#   SAM template lint. Installs what it needs: a Python virtualenv with aws-sam-cli (which ships
#   the emulator), cfn-lint, cargo-lambda, moto (Secrets Manager, DynamoDB and X-Ray on
#   127.0.0.1) and rotel (an OpenTelemetry collector with an X-Ray exporter).
#
# Caches live outside the clone so repeated runs (and CI on the same machine) are fast:
#   APUNTADOR_CACHE (default ~/.cache/apuntador-backend) holds target/ and venv/.
# Set APUNTADOR_CONTAINER=1 to build the server-mode image offline and run it under a Docker it
# starts (scripts/container-image.sh, about a minute), APUNTADOR_DOCS_BROWSER=1 to render the
# API documentation page in headless Chromium (installed from Debian when missing; about a
# minute the first time), APUNTADOR_SAM_BUILD=1 to also run `sam build` (cargo-lambda + zig, a
# few minutes cold), and
# APUNTADOR_SAM_LOCAL=1 to run scripts/sam-local.sh: `sam build`, `sam local invoke` of every
# event and `sam local start-api` under a Docker it installs and starts (about 10 minutes cold).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export SAM_CLI_TELEMETRY=0
venv="$cache/venv"
requirements="scripts/requirements-tools.txt"

step() { printf '\n==> %s\n' "$*"; }

# The device tests check certificates with an independent implementation: the openssl CLI.
if ! command -v openssl >/dev/null; then
  step "installing openssl"
  apt-get update -qq && apt-get install -y -qq openssl
fi

if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
  step "installing test tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.requirements"
fi
export PATH="$venv/bin:$PATH"

case "$(uname -m)" in
  x86_64) rie_arch=x86_64 ;;
  aarch64 | arm64) rie_arch=arm64 ;;
  *) echo "no Lambda emulator for $(uname -m)" >&2; exit 1 ;;
esac
rie=$("$venv/bin/python" -c 'import os, samcli; print(os.path.join(os.path.dirname(samcli.__file__), "local", "rapid"))')/aws-lambda-rie-$rie_arch
export AWS_LAMBDA_RIE="$rie" APUNTADOR_REQUIRE_RIE=1 MOTO_SERVER="$venv/bin/moto_server"
# The X-Ray tests need rotel (a real collector with an X-Ray exporter): fail, never skip.
export APUNTADOR_REQUIRE_ROTEL=1

step "cargo fmt --all --check"
cargo fmt --all --check

# --all-features also lints the optional mimalloc allocator the benchmark compares; --workspace
# the test harness crate.
step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings

# Supply chain (deny.toml): cargo-deny built from its crates.io source (--locked), once, into the
# cache; a repackaged binary would be a supply-chain question of its own. About 3 minutes the
# first time on 2 cores.
deny_version="0.20.2"
tools="$cache/tools"
if [ "$("$tools/bin/cargo-deny" --version 2>/dev/null)" != "cargo-deny $deny_version" ]; then
  step "installing cargo-deny $deny_version into $tools (built from crates.io, once)"
  CARGO_TARGET_DIR="$cache/target-tools" cargo install --locked --quiet --root "$tools" "cargo-deny@$deny_version"
fi
step "cargo deny: licenses, banned and duplicate crates, sources (deny.toml)"
"$tools/bin/cargo-deny" --workspace check licenses bans sources
step "cargo deny: RustSec advisories"
if "$tools/bin/cargo-deny" fetch db >/dev/null 2>&1; then
  "$tools/bin/cargo-deny" --workspace check advisories
else
  echo "SKIPPED: the RustSec advisory database (git clone of https://github.com/RustSec/advisory-db) cannot be fetched from this machine; licenses, bans and sources were checked above"
fi

# CycloneDX SBOMs: cargo-cyclonedx, the CycloneDX project's generator, built the same way.
cyclonedx_version="0.5.9"
if [ "$("$tools/bin/cargo-cyclonedx" cyclonedx --version 2>/dev/null)" != "cargo-cyclonedx-cyclonedx $cyclonedx_version" ]; then
  step "installing cargo-cyclonedx $cyclonedx_version into $tools (built from crates.io, once)"
  CARGO_TARGET_DIR="$cache/target-tools" cargo install --locked --quiet --root "$tools" "cargo-cyclonedx@$cyclonedx_version"
fi
export CARGO_CYCLONEDX="$tools/bin/cargo-cyclonedx"
step "CycloneDX SBOMs of the Lambda zip, arm64 and x86_64 (scripts/sbom.py, into $cache/sbom)"
python scripts/sbom.py lambda "$cache/sbom"

step "cargo build --release (the binary the end-to-end tests run)"
cargo build --locked --release --bin apuntador-backend
export APUNTADOR_BIN="$CARGO_TARGET_DIR/release/apuntador-backend"

step "cargo test"
test_log="$cache/last-test.log"
cargo test --locked 2>&1 | tee "$test_log"

step "cargo test -p apuntador-doctor (the doctor command against moto and its doubles)"
cargo test --locked -p apuntador-doctor 2>&1 | tee -a "$test_log"

step "load and faults (tests/e2e/load.rs, alone: LOAD_SECONDS=${LOAD_SECONDS:-2} a phase; scripts/load.sh runs a minute)"
LOAD_SECONDS="${LOAD_SECONDS:-2}" cargo test --locked --test e2e load:: -- --ignored --test-threads=1 --nocapture 2>&1 | tee -a "$test_log"

step "template lint (cfn-lint, sam validate --lint), the mutual-TLS domain layout, the telemetry transports and Stage=local refused"
cfn-lint template.yaml
sam validate --lint --region eu-west-1
python scripts/check-template.py template.yaml
python scripts/check-template.py --self-test

step "the ECS/Fargate kit (scripts/check-ecs.py: IAM, target group, task definition mirror, checkov, moto's ECS)"
python scripts/check-ecs.py
python scripts/check-ecs.py --self-test

if [ "${APUNTADOR_CONTAINER:-0}" = "1" ]; then
  step "the server-mode image (scripts/container-image.sh)"
  scripts/container-image.sh
fi

if [ "${APUNTADOR_SAM_BUILD:-0}" = "1" ]; then
  step "sam build"
  sam build --build-dir "$cache/sam-build"
  test -x "$cache/sam-build/BackendFunction/bootstrap"
fi

if [ "${APUNTADOR_SAM_LOCAL:-0}" = "1" ]; then
  step "sam local (scripts/sam-local.sh)"
  scripts/sam-local.sh
fi

if [ "${APUNTADOR_DOCS_BROWSER:-0}" = "1" ]; then
  step "the API documentation page in headless Chromium (scripts/docs-browser-check.sh)"
  docs_log="$cache/docs-server.log"
  env -i PATH="$PATH" PORT=0 ENVIRONMENT=local ENABLE_DOCS=true OTEL_TRACES_EXPORTER=none \
    INFRASTRUCTURE_BASE_DIR="$cache/docs-server-ca" "$APUNTADOR_BIN" >"$docs_log" 2>&1 &
  docs_pid=$!
  trap 'kill "$docs_pid" 2>/dev/null || true' EXIT
  docs_url=""
  for _ in $(seq 100); do
    docs_url=$(grep -o 'listening on http://[0-9.:]*' "$docs_log" | head -1 | sed 's/listening on //') || true
    [ -n "$docs_url" ] && break
    kill -0 "$docs_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$docs_url" ] || { echo "the server did not start:" >&2; cat "$docs_log" >&2; exit 1; }
  scripts/docs-browser-check.sh "$docs_url"
  kill "$docs_pid" 2>/dev/null || true
  wait "$docs_pid" 2>/dev/null || true
  trap - EXIT
fi

step "all checks passed"
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$test_log"
