#!/usr/bin/env bash
# Proves, after a deploy, that a client cannot forge the mutual-TLS header (README.md: "Checking
# the mutual-TLS header"). It sends
#
#   GET <api>/device/status/<device-id>
#
# without a client certificate, with a certificate in X-Amzn-Mtls-Clientcert (URL-encoded PEM,
# as the ALB writes it in passthrough mode, and as any client can write it), and exits 0 only
# when the answer is 401 client_certificate_required: the backend saw no client certificate, so
# the header the client sent did not reach it. Anything else fails. 403
# client_certificate_rejected (a throwaway certificate) or 200 (a real device's) means the header
# was trusted: set trusted_client_cert_header = "" and apply at once, then find the hop in front
# of the ALB that passes client headers on. A 401 without that code came from something in front
# of the backend and proves nothing.
#
#   deploy/ecs/check-forged-header.sh https://api.example.com
#   deploy/ecs/check-forged-header.sh --cert device.pem --device-id my-device-01 https://api.example.com
#
# Without --cert it generates a throwaway self-signed certificate with openssl, which is enough:
# a trusted header then answers 403, not 401. With a real device's certificate (its key is not
# needed, which is the point of the check) a trusted header would answer 200 with that device's
# status. Needs bash, curl and openssl; ignores ~/.curlrc (curl -q), so no client certificate is
# configured behind its back. Exit status: 0 the header is ignored (401
# client_certificate_required); 1 it is not, or the answer proves nothing; 2 usage, certificate or
# connection error.
set -euo pipefail

usage() {
  echo "usage: $0 [--cert certificate.pem] [--device-id id] [--timeout seconds] https://api.example.com"
}

api="" cert="" device_id="forged-header-check" timeout=20
while [ $# -gt 0 ]; do
  case "$1" in
    --cert) cert="${2:?--cert needs a PEM file}"; shift 2 ;;
    --device-id) device_id="${2:?--device-id needs an id}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *)
      [ -z "$api" ] || { usage >&2; exit 2; }
      api="$1"; shift ;;
  esac
done
[ -n "$api" ] || { usage >&2; exit 2; }
api="${api%/}"
# The id is a path segment: keep it to the characters device ids use, so it needs no encoding.
[[ "$device_id" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "--device-id: letters, digits, . _ - only" >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "--timeout: whole seconds" >&2; exit 2; }
for tool in curl openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [ -z "$cert" ]; then
  if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=$device_id" -keyout "$scratch/throwaway.key" -out "$scratch/throwaway.pem" \
    >"$scratch/openssl.log" 2>&1; then
    cat "$scratch/openssl.log" >&2
    exit 2
  fi
  cert="$scratch/throwaway.pem"
  origin="a throwaway self-signed certificate (CN=$device_id)"
else
  [ -r "$cert" ] || { echo "cannot read $cert" >&2; exit 2; }
  origin="the certificate in $cert"
fi
# The file's first certificate, re-encoded (one certificate: the backend refuses a header holding
# more, and the point is a header it would otherwise read).
pem=$(openssl x509 -in "$cert" -outform PEM) || { echo "$cert: not a PEM certificate" >&2; exit 2; }

# URL-encoding as the ALB does it: everything but letters, digits and - . _ ~ + = / escaped.
urlencode() {
  local LC_ALL=C text="$1" out="" char i
  for ((i = 0; i < ${#text}; i++)); do
    char="${text:i:1}"
    case "$char" in
      [A-Za-z0-9._~+=/-]) out+="$char" ;;
      *) printf -v char '%%%02X' "'$char"; out+="$char" ;;
    esac
  done
  printf '%s' "$out"
}
header=$(urlencode "$pem"$'\n')

url="$api/device/status/$device_id"
echo "GET $url"
echo "  no client certificate; X-Amzn-Mtls-Clientcert: $origin, URL-encoded (${#header} characters)"
if ! status=$(curl -q --silent --show-error --max-time "$timeout" --output "$scratch/body" \
  --write-out '%{http_code}' --header "X-Amzn-Mtls-Clientcert: $header" "$url"); then
  echo "the request failed (see above): nothing was checked" >&2
  exit 2
fi
body=$(head -c 300 "$scratch/body" | tr -d '\r' | tr '\n' ' ')
echo "  answer: $status $body"

if [ "$status" = 401 ] && grep -q client_certificate_required "$scratch/body"; then
  echo "ok: 401 client_certificate_required: the forged header did not reach the backend as a certificate"
  exit 0
fi
if [ "$status" = 401 ]; then
  echo "FAIL: 401, but not the backend's client_certificate_required: something in front of it answered," >&2
  echo "  so this proves nothing. Check that $api reaches the backend (GET $api/health), then run it again." >&2
  exit 1
fi
echo "FAIL: expected 401, got $status: the backend read a certificate from a header the client wrote." >&2
echo "  Set trusted_client_cert_header = \"\" (terraform/variables.tf) and apply at once, then find the" >&2
echo "  hop in front of the ALB that passes client headers on (README.md: Mutual TLS)." >&2
exit 1
