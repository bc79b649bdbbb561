#!/bin/bash
# Reference guest smoke test against qemu-storage-daemon (QSD), the peer our own back-end must match.
#
#   qsd-smoke.sh            write-verify boot only
#   qsd-smoke.sh fio        then a second boot on the same export running fio with verify=crc32c
#                           in [256M, 384M) (random 4K QD32 writes, 1M sequential writes)
#
# 1. base.raw (1 GiB, 0x11 in [0, 64M)) and overlay.qcow2 on top of it (qemu-img / qemu-io).
# 2. QSD exports overlay.qcow2 as vhost-user-blk on a UNIX socket.
# 3. run-guest.sh boots the test guest on that socket: it checks the backing data, writes patterns at
#    known offsets (one straddling the end of the backing data, one a lone 4K inside a cluster),
#    reads them back, then writes zeros over the last 64 MiB.
# 4. QSD is stopped; qemu-img check must be clean, and qemu-io must read the exact expected content
#    of the whole 1 GiB disk (every byte covered) and the untouched raw base.
#
# Exit status: 0 ok, 1 fail, 2 guest hang (the watchdog of run-guest.sh fired).
# Env: LVSTOR_GUEST_QUEUES (default 1, also the export's num-queues), LVSTOR_GUEST_TIMEOUT,
#      LVSTOR_QSD_AIO (default io_uring), LVSTOR_SMOKE_KEEP=1 keeps the work folder,
#      LVSTOR_SMOKE_FIO the guest's fio jobs (RW:BS:QD:SIZE,..., each inside [256M, 384M); default
#      randwrite:4k:32:64M,write:1M:8:128M).
#      LVSTOR_SMOKE_BACKEND=lvstor runs the same test against our lvstor-vhost-blk back-end
#      (LVSTOR_VHOST_BLK overrides its path) instead of QSD.
set -euo pipefail

with_fio=0
case "${1:-}" in
    "") ;;
    fio) with_fio=1;;
    *) echo "usage: $0 [fio]" >&2; exit 1;;
esac
here=$(cd "$(dirname "$0")" && pwd)
queues=${LVSTOR_GUEST_QUEUES:-1}
aio=${LVSTOR_QSD_AIO:-io_uring}

log() { echo "qsd-smoke: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for t in qemu-img qemu-io qemu-storage-daemon qemu-system-x86_64; do
    command -v "$t" >/dev/null || die "$t not found (build-guest.sh installs it)"
done
LVSTOR_GUEST_FIO=$with_fio "$here/build-guest.sh" >/dev/null || die "build-guest.sh failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-qsd-smoke.XXXXXX")
qsd_pid=
stop_qsd() {
    [ -n "$qsd_pid" ] || return 0
    kill "$qsd_pid" 2>/dev/null || true
    local i=0
    while kill -0 "$qsd_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$qsd_pid" 2>/dev/null; then
        log "QSD did not exit on SIGTERM within 10 s, killing it"
        kill -9 "$qsd_pid" 2>/dev/null || true
    fi
    wait "$qsd_pid" 2>/dev/null || true
    qsd_pid=
}
guest_pid=
# run_guest LOG ARGS...: run-guest.sh in the background and wait for it, so that a SIGTERM to this
# script is handled at once (bash defers traps while a foreground child runs); prints the console.
run_guest() {
    local log=$1 rc=0
    shift
    "$here/run-guest.sh" "$@" >"$log" 2>&1 &
    guest_pid=$!
    wait "$guest_pid" || rc=$?
    guest_pid=
    cat "$log"
    return "$rc"
}
cleanup() {
    # run-guest.sh kills its QEMU on TERM
    if [ -n "$guest_pid" ]; then kill "$guest_pid" 2>/dev/null || true; wait "$guest_pid" 2>/dev/null || true; fi
    stop_qsd
    if [ "${LVSTOR_SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

M=1048576
size=$((1024 * M))

# --- images -------------------------------------------------------------------------------------
qemu-img create -q -f raw "$work/base.raw" "$size"
qemu-io -f raw -c "write -q -P 0x11 0 64M" "$work/base.raw" >/dev/null
qemu-img create -q -f qcow2 -F raw -b base.raw "$work/overlay.qcow2" "$size"   # backing path relative to the overlay
base_md5=$(md5sum < "$work/base.raw")

# What the guest writes (PATTERN@OFFSET+LENGTH), and the expected whole-disk content afterwards as
# contiguous "PATTERN OFFSET LENGTH" extents: backing 0x11 where not overwritten, zeros elsewhere,
# and the last 64 MiB zeroed by the guest's seq=64 pass.
guest_writes="0xab@1M+8M,0xc3@60M+8M,0x5a@100M+4M,0x3c@200M+4K,0xe7@900M+64K"
guest_expect="0x11@0M+1M,0x11@63M+1M,0x00@64M+1M,0x00@1023M+1M"
expected_map="
0x11 0 1M
0xab 1M 8M
0x11 9M 51M
0xc3 60M 8M
0x00 68M 32M
0x5a 100M 4M
0x00 104M 96M
0x3c 200M 4K
0x00 $((200 * M + 4096)) $((56 * M - 4096))
$( [ $with_fio = 1 ] && echo "fio 256M 128M" || echo "0x00 256M 128M" )
0x00 384M 516M
0xe7 900M 64K
0x00 $((900 * M + 65536)) $((124 * M - 65536))
"

# --- QSD ------------------------------------------------------------------------------------------
sock=$work/vhost.sock
if [ "${LVSTOR_SMOKE_BACKEND:-qsd}" = lvstor ]; then
    # our back-end instead of the reference: same image, same socket, same checks
    root=$(cd "$(dirname "$0")/../.." && pwd)
    backend=${LVSTOR_VHOST_BLK:-$root/src/lvstor-vhost-blk/bin/Release/net10.0/lvstor-vhost-blk}
    [ -x "$backend" ] || die "build the back-end first: dotnet build -c Release src/lvstor-vhost-blk ($backend)"
    "$backend" --socket-path "$sock" --image "$work/overlay.qcow2" --format qcow2 --direct --num-queues "$queues" \
        </dev/null >"$work/qsd.log" 2>&1 &
else
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=file0,filename=$work/overlay.qcow2,cache.direct=on,aio=$aio" \
        --blockdev driver=qcow2,node-name=disk0,file=file0 \
        --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues" \
        </dev/null >"$work/qsd.log" 2>&1 &
fi
qsd_pid=$!
i=0
while [ ! -S "$sock" ] && kill -0 "$qsd_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$sock" ] || { cat "$work/qsd.log" >&2; die "QSD did not create $sock"; }
log "QSD pid $qsd_pid exports overlay.qcow2 on $sock (num-queues=$queues, aio=$aio)"

# --- guest ----------------------------------------------------------------------------------------
grc=0
run_guest "$work/guest.log" "$sock" write-verify size=1G seq=64 \
    expect="$guest_expect" write="$guest_writes" || grc=$?
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1)
if [ "$grc" = 0 ] && [ $with_fio = 1 ]; then
    run_guest "$work/guest-fio.log" "$sock" fio fiooff=256M fio="${LVSTOR_SMOKE_FIO:-randwrite:4k:32:64M,write:1M:8:128M}" || grc=$?
    guest_line="$guest_line; fio: $(grep -a '^run-guest: ' "$work/guest-fio.log" | tail -1)"
fi
stop_qsd
if [ -s "$work/qsd.log" ]; then sed 's/^/qsd: /' "$work/qsd.log" >&2; fi
case $grc in
    0) ;;
    2) log "HANG: ${guest_line#run-guest: }"; exit 2;;
    *) die "guest task failed: ${guest_line#run-guest: }";;
esac

# --- host-side verification -----------------------------------------------------------------------
qemu-img check -q "$work/overlay.qcow2" || die "qemu-img check reports errors"
log "qemu-img check: no errors"

bytes() {
    case "$1" in
        *K) echo $(( ${1%K} * 1024 ));;
        *M) echo $(( ${1%M} * M ));;
        *)  echo $(( $1 ));;
    esac
}
io_args=()
pos=0
while read -r pat off len; do
    [ -n "$pat" ] || continue
    off=$(bytes "$off"); len=$(bytes "$len")
    [ "$off" = "$pos" ] || die "expected_map is not contiguous at $off (script bug)"
    if [ "$pat" = fio ]; then      # random fio data (fio verified it); read it to be sure it is readable
        io_args+=(-c "read -q $off $len")
    else
        io_args+=(-c "read -q -P $pat $off $len")
    fi
    pos=$((off + len))
done <<<"$expected_map"
[ "$pos" = "$size" ] || die "expected_map ends at $pos, not $size (script bug)"

# qemu-io exits 1 and prints "Pattern verification failed at offset ..." on a mismatch; with -q it
# prints nothing otherwise, so any output at all is treated as a failure too.
out=$(qemu-io -r -f qcow2 "${io_args[@]}" "$work/overlay.qcow2" 2>&1) || die "qemu-io failed: $out"
[ -z "$out" ] || die "qemu-io: $out"
log "qemu-io: all $(( ${#io_args[@]} / 2 )) extents of the 1 GiB disk hold exactly what the guest wrote"

[ "$(md5sum < "$work/base.raw")" = "$base_md5" ] || die "the raw backing file changed"
log "base.raw untouched"

log "ok (${guest_line#run-guest: })"
