#!/usr/bin/env python3
"""Runs the server-mode image and checks what an ECS task relies on (scripts/container-image.sh
builds the image and calls this with DOCKER_HOST set):

- start to listening: `docker run` until GET /health answers 200 (measured);
- Docker's own health check (the image's HEALTHCHECK, i.e. `apuntador-backend healthcheck`)
  turns "healthy";
- the process runs as uid 65532 (read from the host's /proc of the container's main process),
  with a read-only root filesystem;
- SIGTERM (`docker stop`) lets an in-flight request finish (an OAuth refresh whose provider takes
  2 s to answer) and flushes its spans to an OTLP receiver on the host before the process exits.

Loopback only: the container shares the host's network namespace; everything it talks to
listens on 127.0.0.1. Prints one line per check and the figures; exits 1 on a failure.
"""
import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request

IMAGE = sys.argv[1]
# Made per run: outside ENVIRONMENT=local the backend refuses every key the repository publishes.
SECRET = secrets.token_hex(24)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(http.server.BaseHTTPRequestHandler):
    """The OTLP/HTTP receiver (counts export requests) and the slow OAuth provider."""

    exports = []
    provider_calls = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/v1/traces":
            Recorder.exports.append((time.monotonic(), len(body)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()
            return
        # The provider's token endpoint: slow, then a refused grant (a 4xx the backend maps).
        Recorder.provider_calls.append(time.monotonic())
        time.sleep(2)
        answer = json.dumps({"error": "invalid_grant"}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def serve():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def docker(*args, check=True):
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True)


def main():
    problems = []
    helper, helper_port = serve()
    port = free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "ENVIRONMENT": "staging",
        "SECRET_KEY": SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{helper_port}",
        "OTEL_SERVICE_NAME": "apuntador-container-check",
        "ENABLED_CLOUD_PROVIDERS": "dropbox",
        "DROPBOX_CLIENT_ID": "container-check",
        "OAUTH_DROPBOX_TOKEN_URL": f"http://127.0.0.1:{helper_port}/dropbox/token",
        "INFRASTRUCTURE_BASE_DIR": "/tmp/ca",
    }
    args = ["run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    started = time.monotonic()
    container = docker(*args, IMAGE).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        listening = None
        while time.monotonic() - started < 10:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        listening = time.monotonic() - started
                        break
            except OSError:
                time.sleep(0.01)
        if listening is None:
            problems.append("GET /health never answered: " + docker("logs", container, check=False).stdout[-2000:])
            return problems
        print(f"ok   /health answers 200, {listening * 1000:.0f} ms after docker run")

        health = ""
        while time.monotonic() - started < 30:
            health = docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
            if health in ("healthy", "unhealthy"):
                break
            time.sleep(0.5)
        if health == "healthy":
            print("ok   the image's HEALTHCHECK (apuntador-backend healthcheck) reports healthy")
        else:
            problems.append(f"health check status {health!r}")

        pid = docker("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
        uids = [l for l in open(f"/proc/{pid}/status") if l.startswith("Uid:")][0].split()[1:]
        if set(uids) == {"65532"}:
            print("ok   the process runs as uid 65532 (not root)")
        else:
            problems.append(f"uids {uids}")
        read_only = docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container).stdout.strip()
        if read_only == "true":
            print("ok   with a read-only root filesystem")
        else:
            problems.append("root filesystem is writable")

        # An in-flight request when SIGTERM arrives.
        result = {}

        def refresh():
            request = urllib.request.Request(
                f"{url}/oauth/refresh/dropbox",
                data=json.dumps({"refresh_token": "in-flight"}).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=20) as r:
                    result["status"] = r.status
            except urllib.error.HTTPError as e:
                result["status"] = e.code
            except OSError as e:
                result["error"] = str(e)

        exports_before = len(Recorder.exports)
        worker = threading.Thread(target=refresh)
        worker.start()
        while not Recorder.provider_calls and time.monotonic() - started < 30:
            time.sleep(0.01)
        stop_at = time.monotonic()
        stopped = docker("stop", "-t", "30", container, check=False)
        stopped_after = time.monotonic() - stop_at
        worker.join(timeout=25)
        if result.get("status") == 400:
            print(f"ok   the in-flight request finished during the stop (400 invalid_grant from the provider); stop took {stopped_after:.2f} s")
        else:
            problems.append(f"in-flight request: {result}")
        flushed = [e for e in Recorder.exports[exports_before:] if e[0] >= stop_at]
        if flushed:
            print(f"ok   spans flushed on SIGTERM: {len(flushed)} export(s) after the stop signal")
        else:
            problems.append("no spans exported after SIGTERM")
        code = docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        if code == "0":
            print("ok   exit code 0")
        else:
            problems.append(f"exit code {code}: {docker('logs', container, check=False).stderr[-1500:]}")
        if stopped.returncode != 0:
            problems.append(stopped.stderr)
        print(f"figures: start to listening {listening * 1000:.0f} ms; stop with a request in flight {stopped_after:.2f} s")
    finally:
        docker("rm", "-f", container, check=False)
        helper.shutdown()
    return problems


if __name__ == "__main__":
    found = main()
    for p in found:
        print(f"FAIL {p}")
    sys.exit(1 if found else 0)
