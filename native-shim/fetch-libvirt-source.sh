#!/bin/sh
# Fetches Debian's source of the installed libvirt into DEST (native-shim/build/) so the module compiles
# against exactly the headers of the libvirt it will run in. Nothing of libvirt is committed.
# Usage: fetch-libvirt-source.sh DEST   (prints the source directory it left there)
set -eu
dest=$1
version=$(dpkg-query -W -f='${Version}' libvirt0 2>/dev/null) || {
    echo "libvirt0 is not installed: apt-get install libvirt-dev libvirt-daemon-system" >&2; exit 1; }
upstream=${version#*:}; upstream=${upstream%%-*}
srcdir=$dest/libvirt-$upstream
stamp=$dest/libvirt-source.version
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] && [ -f "$srcdir/src/storage/storage_backend.h" ]; then
    echo "$srcdir"; exit 0
fi
command -v dpkg-source >/dev/null || { echo "apt-get source needs dpkg-dev: apt-get install dpkg-dev" >&2; exit 1; }
# apt-get source needs a deb-src entry; add one mirroring the first deb entry when none exists.
if ! apt-cache showsrc libvirt >/dev/null 2>&1 || [ -z "$(apt-cache showsrc libvirt 2>/dev/null)" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "no deb-src entry for libvirt and not root: add one (see native-shim/README.md)" >&2; exit 1
    fi
    cat > /etc/apt/sources.list.d/lvstor-deb-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
fi
mkdir -p "$dest"
rm -rf "$srcdir"
# --download-only + dpkg-source -x: unpacks with Debian's patches applied; nothing is built.
(cd "$dest" && apt-get source -q --download-only "libvirt=$version" >&2 && \
    dpkg-source -x "libvirt_${version#*:}.dsc" "libvirt-$upstream" >&2)
test -f "$srcdir/src/storage/storage_backend.h"
echo "$version" > "$stamp"
echo "$srcdir"
