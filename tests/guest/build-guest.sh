#!/bin/bash
# Build the minimal test guest for the vhost-user-blk guest tests.
#
#   build-guest.sh            -> prints the guest folder (contains vmlinuz, initrd.img, kernel-version)
#   LVSTOR_GUEST_FIO=1 build-guest.sh   -> also initrd-fio.img (initrd.img + the host's fio and its libraries)
#
# The kernel comes from Debian's archive only (apt-get download + dpkg -x, nothing is installed);
# the initramfs is busybox-static + the six virtio modules + our /init (guest-init.sh).
# Output is cached in $LVSTOR_GUEST_DIR (default ~/.cache/lvstor-guest)/<kernel-version>/ and rebuilt
# only when the kernel or guest-init.sh changes, so repeated runs take well under a second.
#
# Env:
#   LVSTOR_GUEST_DIR    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/lvstor-guest)
#   LVSTOR_GUEST_KPKG   kernel package (default: what linux-image-amd64 currently depends on,
#                       e.g. linux-image-6.1.0-56-amd64)
#   LVSTOR_GUEST_FIO=1  also build initrd-fio.img for lvstor.task=fio (installs fio on the host)
#   LVSTOR_NO_APT=1     never call apt-get install (fail if a tool is missing)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${LVSTOR_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lvstor-guest}

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- host tools -------------------------------------------------------------------------------
need_pkgs=()
# busybox must be static: it is copied into the guest, which has no libc.
{ LC_ALL=C ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic executable' || need_pkgs+=(busybox-static)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v qemu-storage-daemon >/dev/null || need_pkgs+=(qemu-system-common)
command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
fio=${LVSTOR_GUEST_FIO:-0}
[ "$fio" = 1 ] && { command -v fio >/dev/null || need_pkgs+=(fio); }
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "${LVSTOR_NO_APT:-0}" = 1 ] && die "missing packages: ${need_pkgs[*]}"
    log "installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >&2; }
fi

# --- kernel package ---------------------------------------------------------------------------
kpkg=${LVSTOR_GUEST_KPKG:-}
if [ -z "$kpkg" ]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | grep -m1 -o 'linux-image-[0-9][^ ]*-amd64' || true)
    if [ -z "$kpkg" ]; then
        apt-get update -q >&2
        kpkg=$(apt-cache depends linux-image-amd64 | grep -m1 -o 'linux-image-[0-9][^ ]*-amd64') \
            || die "cannot resolve the kernel package behind linux-image-amd64"
    fi
fi
kver=${kpkg#linux-image-}                 # e.g. 6.1.0-56-amd64 (= the modules folder name)
out=$cache_root/$kver
mkdir -p "$out"

# Stamp = kernel package + checksum of everything that goes into the initramfs.
stamp=$(cat "$here/guest-init.sh" "$0" | md5sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$kpkg $stamp" ] \
   && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && { [ "$fio" != 1 ] || [ -f "$out/initrd-fio.img" ]; }; then
    echo "$out"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-guest-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Keep the .deb in the cache: the archive drops old kernel ABIs when a new point release lands.
deb=$(ls "$cache_root"/debs/"${kpkg}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
    mkdir -p "$cache_root/debs"
    log "downloading $kpkg from the Debian archive"
    (cd "$cache_root/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2) \
        || { apt-get update -q >&2 && (cd "$cache_root/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2); } \
        || die "apt-get download $kpkg failed"
    deb=$(ls "$cache_root"/debs/"${kpkg}"_*.deb | head -1)
fi
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$tmp/k"
kdir=$tmp/k/lib/modules/$kver
[ -d "$kdir" ] || die "no /lib/modules/$kver in $deb"
[ -f "$tmp/k/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $deb"

# --- initramfs --------------------------------------------------------------------------------
# The load order comes from each module's depends= field (.modinfo), resolved depth-first, because it
# changes between kernel updates (6.1.176: virtio has no deps; 6.1.192: virtio depends on virtio_ring).
# The package ships no modules.dep and the host needs no kmod this way.
wanted="virtio_pci virtio_blk"
r=$tmp/root
mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules}
cp /bin/busybox "$r/bin/busybox"
: > "$r/etc/modules"
declare -A placed=()
place() {  # place MODULE: copy it after its dependencies, once
    local m=$1 f deps d
    [ -n "${placed[$m]:-}" ] && return 0
    placed[$m]=1
    f=$(find "$kdir" \( -name "$m.ko" -o -name "$m.ko.*" \) | head -1)
    if [ -z "$f" ]; then
        grep -q "/$m.ko" "$kdir/modules.builtin" 2>/dev/null && { log "module $m is built in"; return 0; }
        die "module $m not found in $kver"
    fi
    case "$f" in *.ko) ;; *) die "$f is compressed; busybox insmod needs plain .ko";; esac
    deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | head -1 | tr ',' ' ')
    for d in $deps; do place "${d//-/_}"; done
    cp "$f" "$r/lib/modules/$m.ko"
    echo "$m" >> "$r/etc/modules"
}
for m in $wanted; do place "$m"; done
log "modules: $(tr '\n' ' ' < "$r/etc/modules")"
install -m 0755 "$here/guest-init.sh" "$r/init"
(cd "$r" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$tmp/initrd.img"

# fio layer: the host's fio binary plus its whole ldd closure (~65 libraries, ~80 MB unpacked, with
# ceph/gluster engines), as a second cpio appended to the first: the kernel unpacks concatenated
# archives one after the other. Host and guest libc are the same Debian's, so the binary just runs.
if [ "$fio" = 1 ]; then
    f=$tmp/fio
    mkdir -p "$f/bin" "$f/etc"
    cp "$(command -v fio)" "$f/bin/fio"
    for l in $(ldd "$(command -v fio)" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        mkdir -p "$f$(dirname "$l")"
        cp -L "$l" "$f$l"
    done
    : > "$f/etc/ld.so.conf"
    (cd "$f" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$tmp/fio.cpio.gz"
    cat "$tmp/initrd.img" "$tmp/fio.cpio.gz" > "$tmp/initrd-fio.img"
    mv -f "$tmp/initrd-fio.img" "$out/initrd-fio.img"
    log "fio layer: $(du -h "$out/initrd-fio.img" | cut -f1) initramfs with $(fio --version)"
fi

cp "$tmp/k/boot/vmlinuz-$kver" "$tmp/vmlinuz"
mv -f "$tmp/vmlinuz" "$out/vmlinuz"
mv -f "$tmp/initrd.img" "$out/initrd.img"
echo "$kver" > "$out/kernel-version"
echo "$kpkg $stamp" > "$out/stamp"
log "guest ready in $out ($(du -h "$out/initrd.img" | cut -f1) initramfs)"
echo "$out"
