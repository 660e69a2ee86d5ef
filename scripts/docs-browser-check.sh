#!/usr/bin/env bash
# Renders the API documentation page (GET /docs, Redoc 2 vendored under assets/docs/) in headless
# Chromium and checks what a client developer would see:
#   - every operation of the OpenAPI document (GET <base>/openapi.json) is on the page, in a
#     section of its own with its summary as heading and its method and path, and in the side
#     menu; the "Download" link to /openapi.json is there; /docs#<section> (Redoc's deep links,
#     one per tag) opens on that operation;
#   - Redoc shows no error (its "Something went wrong..." box, e.g. when /openapi.json does not
#     load), the page throws nothing;
#   - the page fetches nothing from another origin (Chromium's net log) and breaks no rule of the
#     page's Content-Security-Policy, save one known harmless one (the Redocly attribution logo,
#     an <img> from their CDN, blocked).
# Chromium resolves no host but the loopback ones, so an external fetch fails and is reported.
#
#   scripts/docs-browser-check.sh                         # serves assets/docs/ + a fixture itself
#   scripts/docs-browser-check.sh http://127.0.0.1:8000   # a running backend with ENABLE_DOCS=true
#
# With no base URL, a python3 server on a free 127.0.0.1 port answers like the Rust routes
# (/docs, /redoc, /docs/redoc.standalone.js, /docs/init.js, /openapi.json), with the document
# DOCS_OPENAPI (default scripts/docs-check-openapi.json) and the header DOCS_CSP.
# Installs Debian's chromium when missing (root, apt). Writes a screenshot of the page
# (1280x2000) to DOCS_SCREENSHOT (default $APUNTADOR_CACHE/docs-screenshot.png) and the DOM dumps,
# net logs and console logs of each page load to $APUNTADOR_CACHE/docs-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

base="${1:-${BASE_URL:-}}"
cache="${APUNTADOR_CACHE:-$HOME/.cache/apuntador-backend}"
artifacts="$cache/docs-check"
screenshot="${DOCS_SCREENSHOT:-$cache/docs-screenshot.png}"
openapi="${DOCS_OPENAPI:-$repo/scripts/docs-check-openapi.json}"
# What Redoc 2.5.4 needs, measured in Chromium (assets/docs/README.md); the backend sends the same.
csp="${DOCS_CSP-"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src blob:"}"

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

if ! command -v chromium >/dev/null; then
  step "installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
chromium --version 2>/dev/null | tail -1

work="$(mktemp -d)"
server_pid=""
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$artifacts"
mkdir -p "$artifacts" "$(dirname "$screenshot")"

if [ -z "$base" ]; then
  step "serving assets/docs/ and $(basename "$openapi") on 127.0.0.1"
  cat >"$work/serve.py" <<'PY'
"""The documentation routes of the backend, from the repository's files."""
import http.server
import os
import sys

assets, openapi, csp, port_file = sys.argv[1:5]
page = (os.path.join(assets, "index.html"), "text/html; charset=utf-8")
js = "application/javascript; charset=utf-8"
routes = {
    "/docs": page,
    "/redoc": page,
    "/docs/redoc.standalone.js": (os.path.join(assets, "redoc.standalone.js"), js),
    "/docs/init.js": (os.path.join(assets, "init.js"), js),
    "/openapi.json": (openapi, "application/json"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, with_body):
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        with open(route[0], "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", route[1])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if route is page and csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
  python3 "$work/serve.py" "$repo/assets/docs" "$openapi" "$csp" "$work/port" \
    2>"$artifacts/server.log" &
  server_pid=$!
  for _ in $(seq 50); do
    [ -s "$work/port" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$artifacts/server.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -s "$work/port" ] || { echo "docs-browser-check: the test server did not start" >&2; exit 1; }
  base="http://127.0.0.1:$(cat "$work/port")"
fi
base="${base%/}"

cat >"$work/check.py" <<'PY'
"""Loads the page in headless Chromium and checks it (see scripts/docs-browser-check.sh)."""
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

base, work, artifacts, screenshot, assets = sys.argv[1:6]
failures = []
notes = {}


def fail(message):
    if message not in failures:
        failures.append(message)
        print(f"  FAIL {message}")


def origin(url):
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


host = urllib.parse.urlsplit(base).hostname or ""
if not (host == "localhost" or host == "::1" or re.fullmatch(r"127(\.\d{1,3}){3}", host)):
    sys.exit(f"docs-browser-check: {base} is not a loopback address; this check talks to loopback only")
base_origin = origin(base)

# --- the files, as the server sends them -----------------------------------------------------
print(f"\n==> {base}: the files the page needs")


direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy


def get(path):
    try:
        with direct.open(base + path, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except OSError as e:
        sys.exit(f"docs-browser-check: GET {base}{path}: {e}")


expected_types = {
    "/docs": ("text/html",),
    "/docs/init.js": ("application/javascript", "text/javascript"),
    "/docs/redoc.standalone.js": ("application/javascript", "text/javascript"),
    "/openapi.json": ("application/json",),
}
bodies = {}
for path, types in expected_types.items():
    status, headers, body = get(path)
    content_type = headers.get("Content-Type", "")
    print(f"  GET {path}: {status} {content_type} {len(body)} bytes")
    if status != 200:
        fail(f"GET {path} answered {status}")
    elif not content_type.split(";")[0].strip().lower() in types:
        # The backend sends these types; a script of another type is refused under nosniff.
        fail(f"GET {path} has Content-Type {content_type!r}, expected {' or '.join(types)}")
    bodies[path] = (headers, body)
page_csp = bodies["/docs"][0].get("Content-Security-Policy")
print(f"  Content-Security-Policy of /docs: {page_csp or '(none sent)'}")
vendored = hashlib.sha256(open(os.path.join(assets, "redoc.standalone.js"), "rb").read()).hexdigest()
served = hashlib.sha256(bodies["/docs/redoc.standalone.js"][1]).hexdigest()
if served != vendored:
    fail(f"/docs/redoc.standalone.js (sha256 {served[:12]}…) is not assets/docs/redoc.standalone.js "
         f"({vendored[:12]}…): a stale build?")
if failures:
    sys.exit(f"\ndocs-browser-check: FAILED, {len(failures)} problem(s) before the browser even started")

try:
    document = json.loads(bodies["/openapi.json"][1])
except ValueError as e:
    sys.exit(f"docs-browser-check: /openapi.json is not JSON: {e}")
methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
operations = [
    {"method": m, "path": p, "operationId": op.get("operationId"),
     "summary": (op.get("summary") or "").strip()}
    for p, item in (document.get("paths") or {}).items()
    for m, op in item.items() if m in methods and isinstance(op, dict)
]
title = ((document.get("info") or {}).get("title") or "").strip()
print(f"  the document ({document.get('openapi')}): {len(operations)} operations, title {title!r}")
if not operations:
    sys.exit("docs-browser-check: the document has no operations to look for")


# --- one page load -----------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(html.parser.HTMLParser):
    """What Redoc 2 rendered: visible text, links, its sections (data-section-id: the first <h2>,
    the method and path of the operations inside), its side menu entries (data-item-id: label,
    active) and its error box ("Something went wrong..." and the message)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.links, self.errors = [], [], []
        self.sections, self.menu = {}, {}
        self.stack, self.verb = [], None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag in VOID:
            return
        frame = {"tag": tag}
        if tag in ("script", "style", "noscript"):
            frame["skip"] = True
        if a.get("data-section-id"):
            frame["section"] = a["data-section-id"]
            self.sections.setdefault(a["data-section-id"], {"heading": None, "operations": []})
        if a.get("data-item-id"):
            frame["item"] = a["data-item-id"]
            self.menu[a["data-item-id"]] = {"label": a.get("aria-label", ""), "active": False}
        if tag == "label" and "active" in classes:
            for outer in reversed(self.stack):
                if "item" in outer:
                    self.menu[outer["item"]]["active"] = True
                    break
        if tag == "a" and "href" in a:
            frame["link"] = a["href"]
        # The operation's badge: <span class="http-verb get">get</span><span>/path</span>.
        if tag == "span" and "http-verb" in classes:
            frame["verb"] = True
        elif tag == "span" and self.verb is not None:
            frame["path"] = True
        if tag in ("h1", "h2", "small") or "link" in frame or "verb" in frame or "path" in frame:
            frame["words"] = []
        self.stack.append(frame)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in VOID or not any(f["tag"] == tag for f in self.stack):
            return
        while self.stack:
            frame = self.stack.pop()
            self.closed(frame)
            if frame["tag"] == tag:
                break

    def closed(self, frame):
        words = " ".join(frame.get("words", []))
        open_sections = [f["section"] for f in self.stack if "section" in f]
        if "link" in frame:
            self.links.append((frame["link"], words))
        if frame["tag"] == "h2":
            for section in open_sections:
                if self.sections[section]["heading"] is None:
                    self.sections[section]["heading"] = words
        if "verb" in frame:
            self.verb = words.lower()
        elif "path" in frame:
            for section in open_sections:
                self.sections[section]["operations"].append((self.verb, words))
            self.verb = None
        if frame["tag"] == "h1" and words.startswith("Something went wrong"):
            self.errors.append(words)
        elif frame["tag"] == "small" and self.errors and ":" not in self.errors[-1]:
            self.errors[-1] += f": {words}"

    def handle_data(self, data):
        data = " ".join(data.split())
        if not data or any("skip" in f for f in self.stack):
            return
        self.text.append(data)
        for frame in self.stack:
            if "words" in frame:
                frame["words"].append(data)


CONSOLE = re.compile(r'^\[[^\]]*?:[A-Z]+:CONSOLE[:(]\d+\)?\] "(.*)", source: (.*) \(\d+\)$', re.S)
LOG_LINE = re.compile(r"^\[\d+:\d+:\d{4}/\d+\.\d+:")


def console_messages(stderr):
    entries, current = [], None
    for line in stderr.splitlines():
        if LOG_LINE.match(line):
            if current is not None:
                entries.append(current)
            current = line
        elif current is not None:
            current += "\n" + line
    if current is not None:
        entries.append(current)
    return [m.groups() for m in map(CONSOLE.match, entries) if m]


def known(message, source):
    """The one violation Redoc 2.5.4 causes under the CSP above, harmless."""
    if "violates the following Content Security Policy" in message and \
            re.search(r"^Loading the image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg'", message):
        return ("the CSP blocked the Redocly attribution logo, an <img> from their CDN "
                "(Redoc then leaves it out)")
    return None


loads = 0


def load(name, url, extra, window):
    """Runs Chromium on url; returns the Dom of --dump-dom (or None) and checks network + console."""
    global loads
    loads += 1
    net_log = os.path.join(artifacts, f"{name}.netlog.json")
    command = [
        "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={os.path.join(work, 'profile-' + name)}",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--disable-extensions", "--no-proxy-server",
        # Any host but loopback fails to resolve: an external fetch fails and shows in the net log.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--enable-logging=stderr", "--v=0", f"--log-net-log={net_log}",
        # With virtual time, render every frame, so that the DOM is dumped (and the screenshot
        # taken) once Redoc has rendered, not before.
        "--run-all-compositor-stages-before-draw",
        f"--window-size={window}", "--virtual-time-budget=10000", *extra, url,
    ]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        fail(f"{name}: chromium did not finish within 120 s")
        return None
    with open(os.path.join(artifacts, f"{name}.chromium.log"), "w") as f:
        f.write(run.stderr)
    if run.returncode != 0:
        fail(f"{name}: chromium exited {run.returncode} (see {artifacts}/{name}.chromium.log)")
    # Requests the page made (Chromium's own background requests have no page initiator).
    try:
        log = json.load(open(net_log))
        kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
        for event in log["events"]:
            params = event.get("params") or {}
            if kinds.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
                continue
            initiator = params.get("initiator") or ""
            if initiator.startswith(("http://", "https://")) and origin(params["url"]) != base_origin:
                fail(f"{name}: the page fetched {params.get('method', 'GET')} {params['url']} "
                     f"(another origin: nothing may load from outside this server)")
    except (OSError, ValueError, KeyError) as e:
        fail(f"{name}: unreadable net log {net_log}: {e}")
    for message, source in console_messages(run.stderr):
        note = known(message, source)
        if note:
            notes.setdefault(note, set()).add(name)
        elif "Content Security Policy" in message or message.startswith("Refused to"):
            fail(f"{name}: CSP violation: {message.splitlines()[0][:300]} ({source})")
        elif message.startswith("Uncaught"):
            fail(f"{name}: uncaught error: {message.splitlines()[0][:300]} ({source})")
        else:
            print(f"  console ({name}): {message.splitlines()[0][:200]}")
    if "--dump-dom" not in extra:
        return None
    with open(os.path.join(artifacts, f"{name}.html"), "w") as f:
        f.write(run.stdout)
    dom = Dom()
    dom.feed(run.stdout)
    dom.close()
    for error in dom.errors:
        fail(f"{name}: Redoc shows an error: {error[:300]}")
    if "redoc-container" not in run.stdout or not dom.sections:
        fail(f"{name}: Redoc rendered nothing (see {artifacts}/{name}.html)")
    return dom


# --- the page: every operation, with its method, path and summary, and its menu entry ----------
print(f"\n==> GET {base}/docs")
page = load("page", f"{base}/docs", ["--dump-dom"], "1280,2000")
text = " ".join(page.text) if page else ""
if page and title and title not in text:
    fail(f"page: the document's title {title!r} is not on the page")
if page and not page.errors and not any(
        href.endswith("/openapi.json") and words == "Download" for href, words in page.links):
    fail("page: no \"Download\" link to /openapi.json (hideDownloadButton?)")

found, missing = {}, []
for op in operations if page and not page.errors and page.sections else []:
    label = f"{op['method'].upper()} {op['path']}"
    # Its section: <div id="tag/<tag>/operation/<operationId>" data-section-id="…"> (or
    # …/paths/<path as a JSON pointer token>/<method> without operationId, no tag/<tag>/ when
    # untagged), the summary in its <h2>, the method and path in the badge of its right panel;
    # its menu entry: <li data-item-id="<the same id>" aria-label="<the summary>">.
    sections = [sid for sid, section in page.sections.items()
                if set(section["operations"]) == {(op["method"], op["path"])} and sid in page.menu]
    if not sections:
        missing.append(f"{label} ({op['operationId'] or 'no operationId'})")
        print(f"  FAIL {label:45} not on the page")
        continue
    sid = sections[0]
    found[label] = sid
    wanted = " ".join(op["summary"].split())
    heading, entry = page.sections[sid]["heading"] or "", page.menu[sid]["label"]
    if wanted and wanted not in heading:
        fail(f"page: the heading of {label} ({sid}) reads {heading!r}, not its summary {wanted!r}")
    elif wanted and wanted not in entry:
        fail(f"page: the menu entry of {label} ({sid}) reads {entry!r}, not its summary {wanted!r}")
    else:
        print(f"  ok   {label:45} #{sid}  {wanted!r}" if wanted else
              f"  ok   {label:45} #{sid}  (no summary)")
if missing and found:
    fail(f"page: {len(missing)} of {len(operations)} operations are not on the page: "
         f"{', '.join(missing)} (see {artifacts}/page.html)")
elif missing:
    fail(f"page: none of the {len(operations)} operations is on the page (see {artifacts}/page.html)")

# --- deep links: /docs#<section id> opens on that operation (the menu entry active) ------------
# Redoc's router is the URL's fragment, so the server never needs to answer /docs/<anything>.
# One link per tag (the first operation of each).
firsts = {}
for label, sid in found.items():
    firsts.setdefault(sid.split("/operation/")[0].split("/paths/")[0], (label, sid))
for number, (label, sid) in enumerate(firsts.values(), 1):
    print(f"\n==> GET {base}/docs#{sid}")
    dom = load(f"link-{number}", f"{base}/docs#{sid}", ["--dump-dom"], "1280,2000")
    if dom is None or dom.errors or not dom.sections:
        continue
    if sid in dom.menu and dom.menu[sid]["active"]:
        print(f"  ok   {label:45} its menu entry is the active one")
    else:
        active = [item for item, entry in dom.menu.items() if entry["active"]]
        fail(f"link-{number}: /docs#{sid} did not open {label} (active menu entry: "
             f"{', '.join(active) or 'none'}; see {artifacts}/link-{number}.html)")

# --- the screenshot ----------------------------------------------------------------------------
print(f"\n==> screenshot of {base}/docs (1280x2000)")
if os.path.exists(screenshot):
    os.remove(screenshot)
load("screenshot", f"{base}/docs", [f"--screenshot={screenshot}"], "1280,2000")
if not os.path.exists(screenshot) or os.path.getsize(screenshot) == 0:
    fail(f"no screenshot was written to {screenshot}")
else:
    print(f"  screenshot: {screenshot}")

for note, names in notes.items():
    print(f"  known, harmless ({len(names)} of {loads} loads): {note}")
print(f"\n  {loads} page loads; DOM dumps, net logs and console logs in {artifacts}/")
if failures:
    print(f"\ndocs-browser-check: FAILED, {len(failures)} problem(s):")
    for f in failures:
        print(f"  - {f}")
    sys.exit(1)
print(f"\ndocs-browser-check: OK, {len(operations)} operations rendered, nothing fetched from another origin")
PY

set +e
python3 "$work/check.py" "$base" "$work" "$artifacts" "$screenshot" "$repo/assets/docs"
status=$?
set -e
echo "docs-browser-check: $(($(date +%s) - started)) s"
exit "$status"
