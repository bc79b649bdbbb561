#!/bin/bash
# Boot the test guest against a vhost-user-blk back-end socket and run one task in it.
#
#   run-guest.sh SOCKET TASK [KEY=VALUE ...]
#
# TASK and each KEY=VALUE become lvstor.task=TASK lvstor.KEY=VALUE on the guest's kernel command line
# (see guest-init.sh), e.g.
#   run-guest.sh /run/x.sock write-verify write=0xab@1M+8M,0x5a@100M+4M expect=0x11@32M+1M size=1G
#   run-guest.sh /run/x.sock fio fio=randwrite:4k:32:64M,randrw:4k:16:32M,write:1M:8:128M
#
# Exit status: 0 the guest reported ok, 1 it reported fail (or died without a result),
#              2 hang: no power-off within the watchdog timeout (QEMU is killed).
# The serial console is copied to stdout (and to $LVSTOR_GUEST_LOG if set); the last line is
#   run-guest: ok|fail|hang elapsed=SECONDS
#
# Env:
#   LVSTOR_GUEST_TIMEOUT=120   watchdog, seconds from QEMU start to power-off
#   LVSTOR_GUEST_QUEUES=1      num-queues of vhost-user-blk-pci
#   LVSTOR_GUEST_RECONNECT=    if set, -chardev ...,reconnect=N (seconds)
#   LVSTOR_GUEST_MEM=512M  LVSTOR_GUEST_SMP=1
#   LVSTOR_GUEST_LOG=FILE      keep the serial console (plus a hang dump) in FILE
#   LVSTOR_GUEST_CONSOLE=FILE  QEMU writes the console to FILE as the guest runs (for scripts that react to it)
#   LVSTOR_GUEST_DIR           guest cache (see build-guest.sh)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 SOCKET TASK [KEY=VALUE ...]" >&2; exit 1; }
[ $# -ge 2 ] || usage
sock=$1 task=$2
shift 2
[ -S "$sock" ] || { echo "run-guest: $sock is not a socket (start the back-end first)" >&2; exit 1; }

timeout_s=${LVSTOR_GUEST_TIMEOUT:-120}
queues=${LVSTOR_GUEST_QUEUES:-1}
mem=${LVSTOR_GUEST_MEM:-512M}
smp=${LVSTOR_GUEST_SMP:-1}

cmdline="console=ttyS0 quiet loglevel=3 panic=-1 lvstor.task=$task"
for kv in "$@"; do
    case "$kv" in
        *=*) cmdline="$cmdline lvstor.$kv";;
        *) usage;;
    esac
done

# The fio task needs the bigger initramfs with fio in it (36 MB; boots ~1 s slower).
initrd=initrd.img
if [ "$task" = fio ]; then initrd="initrd-fio.img"; export LVSTOR_GUEST_FIO=1; fi
guest=$("$here/build-guest.sh") || { echo "run-guest: build-guest.sh failed" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-run-guest.XXXXXX")
qpid=
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -9 "$qpid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chardev="socket,id=c0,path=$sock"
[ -n "${LVSTOR_GUEST_RECONNECT:-}" ] && chardev="$chardev,reconnect=$LVSTOR_GUEST_RECONNECT"

serial=${LVSTOR_GUEST_CONSOLE:-$tmp/serial.log}
start=$(date +%s.%N)
# -no-reboot + panic=-1: a guest panic ends QEMU instead of looping. The HMP monitor socket is only
# used to dump virtqueue state if the guest hangs.
qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -M q35 -m "$mem" -smp "$smp" \
    -nodefaults -no-user-config -display none -no-reboot \
    -object memory-backend-memfd,id=mem,size="$mem",share=on -numa node,memdev=mem \
    -chardev "$chardev" \
    -device vhost-user-blk-pci,id=vdisk,chardev=c0,num-queues="$queues" \
    -serial file:"$serial" \
    -monitor unix:"$tmp/hmp.sock",server=on,wait=off \
    -kernel "$guest/vmlinuz" -initrd "$guest/$initrd" -append "$cmdline" \
    </dev/null >"$tmp/qemu.log" 2>&1 &
qpid=$!

hmp() {  # hmp CMD... : best effort, needs python3
    command -v python3 >/dev/null || return 0
    timeout 10 python3 - "$tmp/hmp.sock" "$@" <<'EOF' || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(2)
def drain():
    out = b""
    try:
        while not out.endswith(b"(qemu) "):
            d = s.recv(65536)
            if not d: break
            out += d
    except socket.timeout: pass
    return out.decode(errors="replace")
drain()
for c in sys.argv[2:]:
    s.sendall(c.encode() + b"\n"); print("(qemu) " + drain().replace("(qemu) ", "").strip())
EOF
}

status=
deadline=$(( $(date +%s) + timeout_s ))
while kill -0 "$qpid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        status=hang
        {
            echo "run-guest: WATCHDOG: no power-off after ${timeout_s}s; virtqueue state follows"
            hmp "info status" \
                "info virtio-vhost-queue-status /machine/peripheral/vdisk/virtio-backend 0" \
                "info virtio-queue-status /machine/peripheral/vdisk/virtio-backend 0"
        } >>"$serial" 2>&1
        kill "$qpid" 2>/dev/null || true
        sleep 1
        kill -9 "$qpid" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
qrc=0
wait "$qpid" || qrc=$?
qpid=
elapsed=$(echo "$start $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}')

if [ -z "$status" ]; then
    result=$(grep -a '^LVSTOR-RESULT ' "$serial" | tail -1 || true)
    case "$result" in
        "LVSTOR-RESULT ok "*) status=ok;;
        "LVSTOR-RESULT fail "*) status=fail;;
        *) status=fail; echo "run-guest: QEMU exited ($qrc) without a result line" >>"$serial"
           sed 's/^/qemu: /' "$tmp/qemu.log" >>"$serial";;
    esac
fi
# QEMU's own stderr is worth seeing even on success (vhost-user warnings).
[ -s "$tmp/qemu.log" ] && [ "$status" != fail ] && sed 's/^/qemu: /' "$tmp/qemu.log" >>"$serial"

echo "run-guest: $status elapsed=$elapsed" >>"$serial"
[ -n "${LVSTOR_GUEST_LOG:-}" ] && cp "$serial" "$LVSTOR_GUEST_LOG"
cat "$serial"
case "$status" in
    ok) exit 0;;
    hang) exit 2;;
    *) exit 1;;
esac
