#!/usr/bin/env python3
"""Before/after figures of the second security review (issue 23) for one server binary, on
loopback (docs/benchmark.md "The second security review"). Run it on the binary before and
after a change:

    python3 scripts/hardening-figures.py target/release/apuntador-backend

  * finding 1: for 5 s, requests carrying `X-Amzn-Trace-Id: …;Sampled=1` under
    OTEL_TRACES_SAMPLER=parentbased_always_off; how many were traced (console exporter);
  * finding 6: 300 connections that send part of a request head and stop; how many are still
    open after 2, 12 and 30 s, whether /health answers meanwhile, and whether SIGTERM stops the
    server within 20 s.

Bounded: one server at a time, at most 300 connections, about a minute in all; the server's
output goes to a temporary file (a pipe nobody reads would block it).
"""
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BINARY = sys.argv[1]


def start(extra):
    env = {"PATH": os.environ["PATH"], "PORT": "0", "SECRET_KEY": secrets.token_hex(24),
           "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50", **extra}
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen([BINARY], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        time.sleep(0.05)
        found = re.search(r"listening on http://([0-9.:]+)", open(log.name).read())
        if found:
            return process, found.group(1), log.name
    process.kill()
    sys.exit("the server did not start")


def stop(process, log):
    process.terminate()
    try:
        process.wait(timeout=20)
        stopped = "stopped on SIGTERM"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        stopped = "not stopped 20 s after SIGTERM (killed)"
    text = open(log).read()
    os.unlink(log)
    return text, stopped


def forced_sampling():
    process, address, log = start({"OTEL_TRACES_SAMPLER": "parentbased_always_off"})
    epoch = "%08x" % int(time.time())
    sent = 0
    began = time.time()
    while time.time() - began < 5:
        header = f"Root=1-{epoch}-{sent:024x};Parent=53995c3f42cd8ad8;Sampled=1"
        request = urllib.request.Request(f"http://{address}/", headers={"X-Amzn-Trace-Id": header})
        urllib.request.urlopen(request, timeout=5).read()
        sent += 1
    text, _ = stop(process, log)
    traced = sum(1 for line in text.splitlines() if '"type":"span"' in line and '"kind":"server"' in line)
    print(f"finding 1: {sent} requests with Sampled=1 in 5 s under parentbased_always_off: {traced} traced")


def slow_clients():
    process, address, log = start({"OTEL_TRACES_EXPORTER": "none"})
    host, port = address.rsplit(":", 1)
    stalled = []
    for _ in range(300):
        connection = socket.create_connection((host, int(port)))
        connection.sendall(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        connection.setblocking(False)
        stalled.append(connection)

    def still_open():
        count = 0
        for connection in stalled:
            try:
                count += connection.recv(1) != b""
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    began = time.time()
    for mark in (2, 12, 30):
        time.sleep(max(0.0, mark - (time.time() - began)))
        print(f"finding 6: after {mark} s, {still_open()} of 300 stalled connections open")
    health = urllib.request.urlopen(f"http://{address}/health", timeout=5).status
    print(f"finding 6: /health meanwhile: {health}")
    _, stopped = stop(process, log)
    print(f"finding 6: with the stalled connections, the server {stopped}")
    for connection in stalled:
        connection.close()


forced_sampling()
slow_clients()
