#!/bin/sh
# Lays out the runtime image's whole filesystem from a built binary: the binary, exactly the
# shared libraries `ldd` says it loads (the C library, libm, libgcc_s and the loader; the TLS
# roots are compiled into the binary), an unprivileged user (65532, "nonroot") and an empty /tmp.
# Used by the Dockerfile's build stage and, for offline builds, on the host
# (scripts/container-image.sh).
#
#   deploy/container/rootfs.sh BINARY OUT_DIR
set -eu
binary="$1"
out="$2"
rm -rf "$out"
mkdir -p "$out/etc" "$out/tmp"
chmod 1777 "$out/tmp"
cp "$binary" "$out/apuntador-backend"
chmod 0755 "$out/apuntador-backend"
# `=> /path` lines are libraries; the loader line has the absolute path first.
ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]*ld-linux/ { print $1 }' |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
# The loader's usual path (/lib64/ld-linux-x86-64.so.2) may be a link into /lib on the host.
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
