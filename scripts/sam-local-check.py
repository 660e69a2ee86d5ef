#!/usr/bin/env python3
"""Checks what a user sees under `sam local` (run by scripts/sam-local.sh, which starts Docker).

  sam-local-check.py invoke --parameter-overrides P [--skip-pull-image]
      `sam local invoke BackendFunction -e events/<file>` for every file in events/, each answer
      checked against EXPECTED (status and one body field), with the time each invoke took.
  sam-local-check.py start-api --url http://127.0.0.1:3000 --log FILE
      the README's curl calls against a running `sam local start-api`.

Standard library only; the CSR comes from the openssl CLI.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

CONFIG_API_KEY = "example-config-api-key-for-local-events-0123456789"

# What each sample event answers under `sam local invoke` with samconfig.toml's parameters:
# (status, body field, expected value or None for "present"). Provider calls cannot succeed
# there (placeholder clients, and no provider reachable from the sandbox here): they must end
# in the clean answer for an unreachable provider, fast.
UNREACHABLE = {502: "provider_error", 504: "provider_timeout"}
EXPECTED = {
    "alb-health-public.json": (200, "message", "Public endpoint (no mTLS)"),
    "function-url-config-providers.json": (200, "version", None),
    "http-api-config-providers.json": (200, "cache_ttl", 3600),
    "http-api-config-providers-unauthorized.json": (401, "detail", "Invalid API key"),
    "http-api-device-ca-certificate-pin.json": (200, "algorithm", "SHA-256"),
    "http-api-device-ca-certificate.json": (200, "format", "PEM"),
    "http-api-device-enroll.json": (201, "serial", None),
    "http-api-device-attest-challenge.json": (200, "platform", "android"),
    "http-api-device-attest-clear-cache.json": (204, None, None),
    # The sample certificates were issued by another CA than the sandbox's development CA.
    "http-api-device-attest-android-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-attest-ios-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-attest-desktop-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-renew-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-revoke-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-status-mtls.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-status-trusted-header.json": (403, "error", "client_certificate_rejected"),
    "http-api-device-status-no-certificate.json": (401, "error", "client_certificate_required"),
    "http-api-health-public.json": (200, "status", "ok"),
    "http-api-health.json": (200, "message", "Service is healthy"),
    "http-api-not-found.json": (404, "instance", "/healthz"),
    "http-api-oauth-authorize-googledrive.json": (200, "authorization_url", None),
    "http-api-oauth-callback-googledrive.json": (302, None, None),
    "http-api-oauth-refresh-onedrive.json": (UNREACHABLE, "error", None),
    "http-api-oauth-revoke-googledrive.json": (UNREACHABLE, "error", None),
    "http-api-oauth-token-dropbox.json": (400, "error", "invalid_state"),
    "http-api-root.json": (200, "message", "Apuntador OAuth Backend"),
    "rest-api-health.json": (200, "message", "Service is healthy"),
}
# An unreachable provider must not hold the caller (OAUTH_TIMEOUT_MS is 2 s locally).
PROVIDER_CALL_BUDGET_S = 15


def last_json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def check_answer(name, answer, expected):
    status, field, value = expected
    got = answer.get("statusCode")
    allowed = status if isinstance(status, dict) else {status: value}
    if got not in allowed:
        return f"status {got}, expected {sorted(allowed)}"
    if field is None:
        return None
    try:
        body = json.loads(answer.get("body") or "null")
    except json.JSONDecodeError:
        return f"body is not JSON: {answer.get('body')!r}"
    want = allowed[got] if isinstance(status, dict) else value
    if not isinstance(body, dict) or field not in body:
        return f"body has no {field}: {body}"
    if want is not None and body[field] != want:
        return f"{field} = {body[field]!r}, expected {want!r}"
    content_type = (answer.get("headers") or {}).get("content-type", "")
    if got >= 400 and not content_type.startswith("application/problem+json"):
        return f"error answer is not problem+json: {content_type!r}"
    return None


def invoke(args):
    events = sorted(f for f in os.listdir("events") if f.endswith(".json"))
    unknown = sorted(set(events) - set(EXPECTED))
    missing = sorted(set(EXPECTED) - set(events))
    if unknown or missing:
        sys.exit(f"events/ and EXPECTED differ: unknown {unknown}, missing {missing}")
    failures, times = [], []
    for name in events:
        command = ["sam", "local", "invoke", "BackendFunction", "-e", f"events/{name}",
                   "--parameter-overrides", args.parameter_overrides]
        if args.skip_pull_image:
            command.append("--skip-pull-image")
        start = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - start
        times.append(took)
        answer = last_json_line(run.stdout)
        if answer is None:
            problem = f"no answer (exit {run.returncode}): {run.stderr[-2000:]}"
        else:
            problem = check_answer(name, answer, EXPECTED[name])
        if problem is None and EXPECTED[name][0] is UNREACHABLE and took > PROVIDER_CALL_BUDGET_S:
            problem = f"took {took:.1f} s: an unreachable provider held the caller"
        status = answer.get("statusCode") if answer else "-"
        print(f"{'ok ' if problem is None else 'BAD'} {name:48} {status!s:>4} {took:5.1f} s"
              + (f"  {problem}" if problem else ""), flush=True)
        if problem:
            failures.append(name)
            # What the function said: the answer's body and its warning and error log lines.
            if answer is not None:
                print(f"    body: {str(answer.get('body'))[:600]}", flush=True)
            for line in (run.stdout + run.stderr).splitlines():
                if '"level":"WARN' in line or '"level":"ERROR' in line:
                    print(f"    log: {line[:600]}", flush=True)
    ok = len(events) - len(failures)
    times.sort()
    print(f"\n{ok} of {len(events)} events gave their intended answer; "
          f"per invoke median {times[len(times) // 2]:.1f} s, max {times[-1]:.1f} s")
    if failures:
        sys.exit(1)


def request(url, method="GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def openssl_csr():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["openssl", "req", "-new", "-nodes", "-subj", "/CN=sam-local",
             "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/csr.pem"],
            check=True, capture_output=True)
        with open(f"{tmp}/csr.pem") as csr:
            return csr.read()


def start_api(args):
    base = args.url.rstrip("/")
    deadline = time.monotonic() + 300
    while True:
        try:
            status, _ = request(f"{base}/health")
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        if time.monotonic() > deadline:
            with open(args.log) as log:
                sys.exit(f"start-api did not answer /health:\n{log.read()[-4000:]}")
        time.sleep(1)

    checks = []

    def check(label, got, expected_status, test=lambda body: True):
        status, body = got
        good = status == expected_status and test(body)
        checks.append(good)
        print(f"{'ok ' if good else 'BAD'} {label:55} {status}" + ("" if good else f"  {body}"),
              flush=True)
        return body

    check("GET /health", request(f"{base}/health"), 200, lambda b: b["status"] == "ok")
    check("GET /", request(f"{base}/"), 200, lambda b: b["message"] == "Apuntador OAuth Backend")
    check("GET /config/providers (Bearer key)",
          request(f"{base}/config/providers", headers={"Authorization": f"Bearer {CONFIG_API_KEY}"}),
          200, lambda b: b["providers"]["googledrive"]["enabled"] is True)
    check("POST /oauth/authorize/googledrive",
          request(f"{base}/oauth/authorize/googledrive", "POST",
                  {"code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                   "redirect_uri": "apuntador://oauth-callback"}),
          200, lambda b: b["authorization_url"].startswith("https://accounts.google.com/"))
    enrolled = check("POST /device/enroll",
                     request(f"{base}/device/enroll", "POST",
                             {"csr": openssl_csr(), "device_id": "sam-local-device",
                              "platform": "android"}),
                     201, lambda b: "BEGIN CERTIFICATE" in b["certificate"])
    cert = enrolled.get("certificate", "") if isinstance(enrolled, dict) else ""
    header = {"X-Client-Cert": urllib.parse.quote(cert, safe="")}
    check("GET /device/status/sam-local-device (X-Client-Cert)",
          request(f"{base}/device/status/sam-local-device", headers=header),
          200, lambda b: b["serial"] == enrolled.get("serial"))
    check("GET /device/status/sam-local-device (no certificate)",
          request(f"{base}/device/status/sam-local-device"), 401)
    renewed = check("POST /device/renew (X-Client-Cert)",
                    request(f"{base}/device/renew", "POST",
                            {"csr": openssl_csr(), "device_id": "sam-local-device",
                             "old_serial": enrolled.get("serial")}, header),
                    200, lambda b: b["serial"] != enrolled.get("serial"))
    new_header = {"X-Client-Cert": urllib.parse.quote(renewed.get("certificate", ""), safe="")}
    check("GET /device/status with the replaced certificate",
          request(f"{base}/device/status/sam-local-device", headers=header), 403)
    check("POST /device/revoke (X-Client-Cert)",
          request(f"{base}/device/revoke", "POST", {"device_id": "sam-local-device"}, new_header),
          200, lambda b: b["success"] is True)
    check("GET /device/status after revoke",
          request(f"{base}/device/status/sam-local-device", headers=new_header), 403)
    check("GET /device/ca-certificate-pin", request(f"{base}/device/ca-certificate-pin"), 200,
          lambda b: b["algorithm"] == "SHA-256")
    check("GET /Prod/health (no stage prefix, as deployed)", request(f"{base}/Prod/health"), 404)
    print(f"\n{sum(checks)} of {len(checks)} start-api calls answered as expected")
    if not all(checks):
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    inv = sub.add_parser("invoke")
    inv.add_argument("--parameter-overrides", required=True)
    inv.add_argument("--skip-pull-image", action="store_true")
    api = sub.add_parser("start-api")
    api.add_argument("--url", required=True)
    api.add_argument("--log", required=True)
    args = parser.parse_args()
    {"invoke": invoke, "start-api": start_api}[args.mode](args)


if __name__ == "__main__":
    main()
