#!/usr/bin/env python3
"""CycloneDX SBOMs of what ships (issue 26 item 7): the Lambda zip and the server image.

  scripts/sbom.py lambda OUT_DIR          one SBOM per architecture of the Lambda zip
                                          (apuntador-backend-lambda-<arch>.cdx.json): the crates
                                          compiled into the `bootstrap` binary, from
                                          cargo-cyclonedx; the zip holds nothing else (the C
                                          library is Lambda's provided.al2023 runtime's)
  scripts/sbom.py image BINARY OUT_DIR    the server image's SBOM (apuntador-backend-image.cdx.json):
                                          the binary's crates for the host's architecture, plus
                                          the shared libraries deploy/container/rootfs.sh copies
                                          into the image (what `ldd BINARY` lists), each as the
                                          Debian package it comes from, with its version

Each SBOM is checked before it is kept: its crates are exactly those `cargo tree` says the
binary is built from for that target (normal and build dependencies, no dev-dependencies, no
other workspace member), each with a pkg:cargo purl, the SHA-256 of its crates.io archive and a
licence; the image's libraries are each one dpkg package; the whole document validates against
the CycloneDX 1.5 JSON schema (cyclonedx-python-lib, strict). cargo-cyclonedx (the CycloneDX
project's generator) is built from crates.io into the cache by scripts/test.sh; CARGO_CYCLONEDX
names it (default: the cache's copy, else the one on PATH).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "apuntador-backend"
TARGETS = {"arm64": "aarch64-unknown-linux-gnu", "x86_64": "x86_64-unknown-linux-gnu"}


def run(*args, cwd=REPO):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def cargo_cyclonedx(target):
    """The binary's SBOM for `target`, as cargo-cyclonedx writes it (next to each member's
    Cargo.toml, `<package>_bin.cdx.json`)."""
    cached = Path(os.environ.get("APUNTADOR_CACHE", Path.home() / ".cache" / "apuntador-backend")) / "tools" / "bin" / "cargo-cyclonedx"
    tool = os.environ.get("CARGO_CYCLONEDX") or (str(cached) if cached.exists() else "cargo-cyclonedx")
    run(tool, "cyclonedx", "--manifest-path", str(REPO / "Cargo.toml"), "--describe", "binaries",
        "--target", target, "--format", "json", "--spec-version", "1.5", "--quiet")
    written = REPO / f"{PACKAGE}_bin.cdx.json"
    bom = json.loads(written.read_text())
    # The other workspace members get one too; only the backend's binary ships.
    for path in [written, *REPO.glob("*/*_bin.cdx.json")]:
        path.unlink()
    return bom


def built_crates(target):
    """{(name, version)} of the crates the backend's binary is built from for `target`."""
    tree = run("cargo", "tree", "--locked", "-p", PACKAGE, "--target", target, "-e", "normal,build",
               "--prefix", "none", "--format", "{p}")
    crates = set()
    for line in tree.splitlines():
        m = re.match(r"(\S+) v(\S+)", line.strip())
        if m and m.group(1) != PACKAGE:
            crates.add((m.group(1), m.group(2)))
    return crates


def keep_built(bom, target):
    """Drops what cargo-cyclonedx lists beyond the build: it walks the workspace's resolve, so
    optional dependencies no feature turns on here (reqwest's HTTP/3 and cookie stores) and
    crates only another member uses (the doctor's SDK clients) come out as the backend's; the
    binary is built from `cargo tree -p apuntador-backend` alone. What is dropped is counted."""
    built = built_crates(target)
    kept, dropped = [], []
    for c in bom.get("components", []):
        if c.get("purl", "").startswith("pkg:cargo/") and (c["name"], c["version"]) not in built:
            dropped.append(c["bom-ref"])
        else:
            kept.append(c)
    bom["components"] = kept
    gone = set(dropped)
    bom["dependencies"] = [
        dict(d, dependsOn=[r for r in d.get("dependsOn", []) if r not in gone])
        for d in bom.get("dependencies", [])
        if d.get("ref") not in gone
    ]
    return len(dropped)


def check_crates(bom, target):
    problems = []
    root = bom.get("metadata", {}).get("component", {})
    version = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    if (root.get("name"), root.get("version")) != (PACKAGE, version):
        problems.append(f"the SBOM describes {root.get('name')} {root.get('version')}, not {PACKAGE} {version}")
    listed = {}
    for c in bom.get("components", []):
        if c.get("purl", "").startswith("pkg:cargo/"):
            listed[(c["name"], c["version"])] = c
    expected = built_crates(target)
    missing = sorted(expected - set(listed))
    extra = sorted(set(listed) - expected)
    if missing:
        problems.append(f"{len(missing)} crates built in are missing: {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} crates listed are not built in: {extra[:5]}")
    for (name, ver), c in sorted(listed.items()):
        if c.get("purl") != f"pkg:cargo/{name}@{ver}":
            problems.append(f"{name} {ver}: purl {c.get('purl')}")
        if not any(h.get("alg") == "SHA-256" and len(h.get("content", "")) == 64 for h in c.get("hashes", [])):
            problems.append(f"{name} {ver}: no SHA-256 of its archive")
        if not c.get("licenses"):
            problems.append(f"{name} {ver}: no licence")
    return problems, len(listed)


def write(bom, path):
    """Writes the SBOM after validating it against the CycloneDX 1.5 JSON schema (strict: no
    member the schema does not define); an invalid one is a failure, not a file."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = json.dumps(bom, indent=1) + "\n"
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        raise SystemExit(f"{path.name} is not valid CycloneDX 1.5: {error}")
    path.write_text(text)


def lambda_sboms(out):
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for arch, target in TARGETS.items():
        name = f"{PACKAGE}-lambda-{arch}"
        bom = cargo_cyclonedx(target)
        dropped = keep_built(bom, target)
        problems, count = check_crates(bom, target)
        for problem in problems:
            print(f"FAIL {name}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        write(bom, out / f"{name}.cdx.json")
        print(f"ok   {out / (name + '.cdx.json')}: {count} crates, each with purl, SHA-256 and licence "
              f"({dropped} listed by cargo-cyclonedx but not built in, left out)"
              if not problems else f"FAIL {name}")
    return 1 if failed else 0


def shared_libraries(binary):
    """The libraries rootfs.sh copies: `ldd`'s resolved paths and the loader."""
    libs = []
    for line in run("ldd", str(binary)).splitlines():
        m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S*ld-linux\S*)", line)
        if m:
            libs.append(m.group(1))
    return libs


def debian_package(path):
    """(package, version, architecture) that installed `path` (following links as dpkg records them)."""
    for candidate in (path, os.path.realpath(path)):
        for query in (candidate, candidate.replace("/usr/lib/", "/lib/", 1), candidate.replace("/lib/", "/usr/lib/", 1)):
            result = subprocess.run(["dpkg", "-S", query], capture_output=True, text=True)
            if result.returncode == 0:
                package = result.stdout.split(":", 1)[0].strip()
                # dpkg -S answers "pkg:arch: path"
                package, _, arch = package.partition(":")
                version = run("dpkg-query", "-W", "-f", "${Version}", f"{package}:{arch}" if arch else package)
                return package, version, arch or run("dpkg", "--print-architecture").strip()
    return None


def image_sbom(binary, out):
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}[os.uname().machine]
    target = TARGETS[arch]
    bom = cargo_cyclonedx(target)
    keep_built(bom, target)
    problems, count = check_crates(bom, target)
    libraries = []
    for lib in shared_libraries(binary):
        found = debian_package(lib)
        if not found:
            problems.append(f"{lib}: no Debian package owns it")
            continue
        package, version, deb_arch = found
        libraries.append({
            "type": "library",
            "bom-ref": f"pkg:deb/debian/{package}@{version}?arch={deb_arch}#{lib}",
            "name": package,
            "version": version,
            "description": f"{lib} in the image (copied by deploy/container/rootfs.sh)",
            "purl": f"pkg:deb/debian/{package}@{version}?arch={deb_arch}",
            "scope": "required",
        })
    if not libraries:
        problems.append("no shared library found: is BINARY dynamically linked?")
    # One component per package (libc6 provides libc, libm and the loader).
    seen = {}
    for library in libraries:
        seen.setdefault(library["purl"], library)
    bom["components"] = bom.get("components", []) + [
        dict(c, **{"bom-ref": c["purl"]}) for c in seen.values()
    ]
    bom["metadata"]["component"] = {
        "type": "container",
        "bom-ref": f"{PACKAGE}-image",
        "name": f"{PACKAGE}-image",
        "version": bom["metadata"]["component"].get("version"),
        "description": "the server-mode image: FROM scratch, the binary, its shared libraries, an unprivileged user",
        "components": [bom["metadata"]["component"]],
    }
    for problem in problems:
        print(f"FAIL image SBOM: {problem}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{PACKAGE}-image.cdx.json"
    write(bom, path)
    if not problems:
        print(f"ok   {path}: {count} crates and {len(seen)} Debian packages "
              f"({', '.join(sorted(c['name'] for c in seen.values()))})")
    return 1 if problems else 0


def main(argv):
    if len(argv) == 2 and argv[0] == "lambda":
        return lambda_sboms(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "image":
        return image_sbom(Path(argv[1]), Path(argv[2]))
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
