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
name=reconnect
. "$(dirname "$0")/lib.sh"
queues=${LVSTOR_GUEST_QUEUES:-1}
delay=${LVSTOR_RECONNECT_DELAY:-3}
export LVSTOR_GUEST_TIMEOUT=${LVSTOR_GUEST_TIMEOUT:-300}
LVSTOR_GUEST_FIO=1 guest_setup reconnect
# kill -9 loses no acknowledged write only if every write is durable when acknowledged
if [ "$mode" = kill ]; then lvstor_args=(--writethrough); fi

size=$((1024 * M))
qemu-img create -q -f qcow2 "$work/overlay.qcow2" "$size"
qemu-io -f qcow2 -c "write -q -P 0x5c 0 64M" "$work/overlay.qcow2" >/dev/null

start_backend "$work/overlay.qcow2" "$queues"

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
start_backend "$work/overlay.qcow2" "$queues"
t1=$(date +%s.%N)
log "back-end $old_pid stopped (SIG$( [ "$mode" = kill ] && echo KILL || echo TERM ), exit $restart_rc); new pid $backend_pid after $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s"

grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1 || true)
fio_lines=$(grep -a '^lvstor: fio .* ok' "$work/guest.log" | sed 's/^lvstor: //' | tr '\n' ';' || true)
stop_backend TERM
print_backend_logs
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
verify_extents "$work/overlay.qcow2" "$size" "
0x5c 0 64M
0x00 64M 192M
fio 256M 128M
0x00 384M 640M
"
log "ok $summary"
