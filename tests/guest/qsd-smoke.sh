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
name=qsd-smoke
. "$(dirname "$0")/lib.sh"
queues=${LVSTOR_GUEST_QUEUES:-1}
LVSTOR_GUEST_FIO=$with_fio guest_setup qsd-smoke

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

# --- back-end -----------------------------------------------------------------------------------
start_backend "$work/overlay.qcow2" "$queues"

# --- guest ----------------------------------------------------------------------------------------
grc=0
run_guest "$work/guest.log" "$sock" write-verify size=1G seq=64 \
    expect="$guest_expect" write="$guest_writes" || grc=$?
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1)
if [ "$grc" = 0 ] && [ $with_fio = 1 ]; then
    run_guest "$work/guest-fio.log" "$sock" fio fiooff=256M fio="${LVSTOR_SMOKE_FIO:-randwrite:4k:32:64M,write:1M:8:128M}" || grc=$?
    guest_line="$guest_line; fio: $(grep -a '^run-guest: ' "$work/guest-fio.log" | tail -1)"
fi
stop_backend
print_backend_logs
guest_verdict "$grc" "${guest_line#run-guest: }"

# --- host-side verification -----------------------------------------------------------------------
qemu-img check -q "$work/overlay.qcow2" || die "qemu-img check reports errors"
log "qemu-img check: no errors"

verify_extents "$work/overlay.qcow2" "$size" "$expected_map"

[ "$(md5sum < "$work/base.raw")" = "$base_md5" ] || die "the raw backing file changed"
log "base.raw untouched"

log "ok (${guest_line#run-guest: })"
