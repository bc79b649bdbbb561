#!/bin/bash
# Back-end restart under a running guest (QEMU -chardev ...,reconnect=1, vhost-user inflight tracking).
#
#   reconnect.sh graceful   SIGTERM the back-end mid-fio and start it again (it flushes and exits)
#   reconnect.sh kill       kill -9 the back-end mid-fio and start it again; our back-end runs with
#                           --writethrough, so every completed write is durable and the requests in
#                           flight at the kill must be resubmitted by the new back-end (INFLIGHT_SHMFD)
#
# 1. overlay.qcow2 (1 GiB, no backing file) with 0x5c in [0, 64M) written by qemu-io.
# 2. The back-end exports it on a UNIX socket; the guest boots with LVSTOR_GUEST_RECONNECT=1 and runs
#    fio with verify=crc32c in [256M, 384M) (random 4K QD32 writes over 128M, then 1M writes over 64M).
# 3. When the guest prints its first "fio ... start" line, wait LVSTOR_RECONNECT_DELAY seconds (3),
#    then restart the back-end on the same socket and image; QEMU reconnects and the guest goes on.
# 4. fio must finish with zero verify errors; then qemu-img check must pass (after kill -9 leaked
#    clusters are accepted and reported: a write that was in flight may have allocated a cluster
#    whose refcount reached the disk before the mapping did) and qemu-io must read 0x5c in
#    [0, 64M), zeros outside the fio region, and the whole fio region.
#
# Exit status: 0 ok, 1 fail, 2 guest hang (the watchdog of run-guest.sh fired).
# Env: LVSTOR_SMOKE_BACKEND=lvstor|qsd (default qsd, the reference; LVSTOR_VHOST_BLK overrides our
#      binary's path), LVSTOR_GUEST_QUEUES (1), LVSTOR_GUEST_TIMEOUT (300), LVSTOR_RECONNECT_DELAY (3),
#      LVSTOR_QSD_AIO (io_uring), LVSTOR_SMOKE_KEEP=1 keeps the work folder.
# Last line on stderr: "reconnect: ok|FAIL|HANG ..." with the back-end, mode, exit status of the
# stopped back-end, requests the new one resubmitted (lvstor) and the guest's fio results.
set -euo pipefail

mode=${1:-}
case "$mode" in
    graceful|kill) ;;
    *) echo "usage: $0 graceful|kill" >&2; exit 1;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
backend_kind=${LVSTOR_SMOKE_BACKEND:-qsd}
queues=${LVSTOR_GUEST_QUEUES:-1}
delay=${LVSTOR_RECONNECT_DELAY:-3}
aio=${LVSTOR_QSD_AIO:-io_uring}
export LVSTOR_GUEST_TIMEOUT=${LVSTOR_GUEST_TIMEOUT:-300}

log() { echo "reconnect: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for t in qemu-img qemu-io qemu-system-x86_64; do
    command -v "$t" >/dev/null || die "$t not found (build-guest.sh installs it)"
done
case "$backend_kind" in
    lvstor)
        backend=${LVSTOR_VHOST_BLK:-$root/src/lvstor-vhost-blk/bin/Release/net10.0/lvstor-vhost-blk}
        [ -x "$backend" ] || die "build the back-end first: dotnet build -c Release src/lvstor-vhost-blk ($backend)";;
    qsd)
        command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found";;
    *) die "LVSTOR_SMOKE_BACKEND is lvstor or qsd";;
esac
LVSTOR_GUEST_FIO=1 "$here/build-guest.sh" >/dev/null || die "build-guest.sh failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-reconnect.XXXXXX")
sock=$work/vhost.sock
backend_pid=
guest_pid=
instance=0

# start_backend: one more instance on the same socket and image, logging to backend-N.log
start_backend() {
    instance=$((instance + 1))
    local blog=$work/backend-$instance.log
    rm -f "$sock"   # QSD does not replace a stale socket (ours does)
    if [ "$backend_kind" = lvstor ]; then
        local extra=()
        [ "$mode" = kill ] && extra=(--writethrough)
        "$backend" --socket-path "$sock" --image "$work/overlay.qcow2" --format qcow2 --direct \
            --num-queues "$queues" "${extra[@]}" </dev/null >"$blog" 2>&1 &
    else
        qemu-storage-daemon \
            --blockdev "driver=file,node-name=file0,filename=$work/overlay.qcow2,cache.direct=on,aio=$aio" \
            --blockdev driver=qcow2,node-name=disk0,file=file0 \
            --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues" \
            </dev/null >"$blog" 2>&1 &
    fi
    backend_pid=$!
    local i=0
    while [ ! -S "$sock" ] && kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    [ -S "$sock" ] || { cat "$blog" >&2; die "back-end $instance did not create $sock"; }
}

# stop_backend SIGNAL: signal the running instance and wait for it (TERM: up to 20 s, then KILL);
# sets stopped_rc to its exit status
stopped_rc=
stop_backend() {
    [ -n "$backend_pid" ] || return 0
    kill "-$1" "$backend_pid" 2>/dev/null || true
    local i=0
    while kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$backend_pid" 2>/dev/null; then
        log "back-end $instance did not exit on SIG$1 within 20 s, killing it"
        kill -9 "$backend_pid" 2>/dev/null || true
    fi
    stopped_rc=0
    wait "$backend_pid" 2>/dev/null || stopped_rc=$?
    backend_pid=
}

cleanup() {
    if [ -n "$guest_pid" ]; then kill "$guest_pid" 2>/dev/null || true; wait "$guest_pid" 2>/dev/null || true; fi
    stop_backend TERM
    if [ "${LVSTOR_SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

M=1048576
size=$((1024 * M))
qemu-img create -q -f qcow2 "$work/overlay.qcow2" "$size"
qemu-io -f qcow2 -c "write -q -P 0x5c 0 64M" "$work/overlay.qcow2" >/dev/null

start_backend
log "$backend_kind back-end pid $backend_pid on $sock (mode=$mode, num-queues=$queues)"

# run-guest.sh keeps its console in a mktemp folder under $TMPDIR: put that under $work to watch it.
mkdir "$work/guest-tmp"
TMPDIR=$work/guest-tmp LVSTOR_GUEST_RECONNECT=1 "$here/run-guest.sh" "$sock" fio fiooff=256M \
    fio=randwrite:4k:32:128M,write:1M:8:64M >"$work/guest.log" 2>&1 &
guest_pid=$!

# Wait for the guest's first fio start line (boot is ~20 s under TCG).
started=
for _ in $(seq 1 $((LVSTOR_GUEST_TIMEOUT * 5))); do
    kill -0 "$guest_pid" 2>/dev/null || break
    started=$(cat "$work"/guest-tmp/lvstor-run-guest.*/serial.log 2>/dev/null | grep -a -m1 '^lvstor: fio .* start' || true)
    [ -n "$started" ] && break
    sleep 0.2
done
[ -n "$started" ] || { rc=0; wait "$guest_pid" || rc=$?; guest_pid=; cat "$work/guest.log"; die "the guest never started fio (run-guest exit $rc)"; }
log "guest: ${started#lvstor: }; restarting the back-end in ${delay}s"
sleep "$delay"
console=$(cat "$work"/guest-tmp/lvstor-run-guest.*/serial.log 2>/dev/null || true)
if grep -aq '^lvstor: fio .* ok' <<<"$console"; then
    log "warning: the first fio job had already finished before the restart"
fi
grep -aq '^LVSTOR-RESULT' <<<"$console" && die "the guest finished before the restart (raise the fio sizes)"

old_pid=$backend_pid
t0=$(date +%s.%N)
if [ "$mode" = kill ]; then stop_backend KILL; else stop_backend TERM; fi
restart_rc=$stopped_rc
start_backend
t1=$(date +%s.%N)
log "back-end $old_pid stopped (SIG$( [ "$mode" = kill ] && echo KILL || echo TERM ), exit $restart_rc); new pid $backend_pid after $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s"

grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1 || true)
fio_lines=$(grep -a '^lvstor: fio .* ok' "$work/guest.log" | sed 's/^lvstor: //' | tr '\n' ';' || true)
stop_backend TERM
for f in "$work"/backend-*.log; do sed "s/^/$(basename "$f" .log): /" "$f" >&2; done
resubmitted=n/a
if [ "$backend_kind" = lvstor ]; then
    resubmitted=$( (grep -ao 'resubmitting [0-9]*' "$work/backend-2.log" || true) | awk '{n += $2} END {print n + 0}')
    grep -aq 'front-end' "$work/backend-2.log" || log "note: no front-end line in the new back-end's log"
fi
summary="backend=$backend_kind mode=$mode stopped_exit=$restart_rc resubmitted=$resubmitted ${guest_line#run-guest: } fio: ${fio_lines:-none}"
case $grc in
    0) ;;
    2) log "HANG: $summary"; exit 2;;
    *) outside=$(grep -ao 'terminating on signal [0-9]* from pid [0-9]*' "$work/guest.log" | head -1 || true)
       [ -n "$outside" ] && summary="$summary (QEMU: $outside, not this script)"
       die "guest task failed: $summary";;
esac

# --- host-side verification -----------------------------------------------------------------------
crc=0
qemu-img check -q "$work/overlay.qcow2" || crc=$?
case $crc in
    0) log "qemu-img check: no errors";;
    3) [ "$mode" = kill ] || die "qemu-img check reports leaked clusters after a graceful restart"
       log "qemu-img check: leaked clusters only (accepted after kill -9): $(qemu-img check "$work/overlay.qcow2" 2>&1 | grep -a 'leaked' | head -1)";;
    *) die "qemu-img check reports errors (exit $crc)";;
esac
out=$(qemu-io -r -f qcow2 -c "read -q -P 0x5c 0 64M" -c "read -q -P 0 64M 192M" -c "read -q 256M 128M" \
    -c "read -q -P 0 384M 640M" "$work/overlay.qcow2" 2>&1) || die "qemu-io failed: $out"
[ -z "$out" ] || die "qemu-io: $out"
log "qemu-io: 0x5c in [0, 64M), zeros outside the fio region, fio region readable"
log "ok $summary"
