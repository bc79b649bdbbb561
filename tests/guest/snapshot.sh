#!/bin/bash
# Live snapshots of a running guest's disk through lvstord (issue 4's acceptance):
#
# 1. A private dbus-daemon and lvstord (state and sockets in a temporary folder); `lvstor` defines and starts
#    a pool and creates a 1 GiB qcow2 volume.
# 2. The test guest boots on the volume's socket and runs fio with verify=crc32c: random 4K writes at QD32,
#    then 1M sequential writes, each job verifying what it wrote at the end.
# 3. While fio writes, `lvstor snapshot` is taken twice (the export switches to the new overlay between
#    two requests). fio reads back through the whole chain, so a write lost or misplaced by a switch fails it.
# 4. lvstord is stopped (SIGTERM); `qemu-img check` must be clean on every layer, `qemu-img info
#    --backing-chain` must show the two snapshot layers under the top, and `lvstor snapshot-list` both names.
#
# Exit status: 0 ok, 1 fail, 2 guest hang. Env: LVSTOR_GUEST_TIMEOUT (default 300), LVSTOR_SMOKE_KEEP=1,
# LVSTOR_SNAPSHOT_FIO (fio jobs, default randwrite:4k:32:64M,write:1M:8:128M), LVSTORD / LVSTOR (binaries).
set -euo pipefail

name=snapshot
LVSTOR_SMOKE_BACKEND=lvstord
. "$(dirname "$0")/lib.sh"
timeout_s=${LVSTOR_GUEST_TIMEOUT:-300}
LVSTOR_GUEST_FIO=1 guest_setup snapshot

start_service
lv pool-define-as guests "$work/pool" >/dev/null
lv pool-start guests >/dev/null
lv vol-create-as guests vm1 1G --format qcow2 >/dev/null
sock=$(lv vol-path vm1 --pool guests)
[ -S "$sock" ] || die "the volume's path $sock is not a socket"
log "volume vm1 exported on $sock"

# --- guest with fio, snapshots while it writes ----------------------------------------------------------
jobs=${LVSTOR_SNAPSHOT_FIO:-randwrite:4k:32:64M,write:1M:8:128M}
start_fio_guest "$sock" "$jobs" 256M

taken=0
n=0
for job in ${jobs//,/ }; do
    n=$((n + 1))
    wait_console "fio $job start" || break
    sleep "${LVSTOR_SNAPSHOT_DELAY:-3}"   # inside the job's write phase
    t0=$(date +%s.%N)
    out=$(lv snapshot vm1 "s$n" --pool guests 2>&1) || die "lvstor snapshot s$n failed: $out"
    taken=$((taken + 1))
    log "snapshot s$n taken during fio $job in $(echo "$t0 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}') s"
done

grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1)
[ "$taken" -ge 1 ] || die "no snapshot was taken while fio ran (${guest_line#run-guest: })"

# --- host-side checks -----------------------------------------------------------------------------------
listed=$(lv snapshot-list vm1 --pool guests --json)
info=$(lv vol-info vm1 --pool guests --json)
stop_service TERM
print_backend_logs
[ "$stopped_rc" = 0 ] || die "lvstord exited with $stopped_rc on SIGTERM"
guest_verdict "$grc" "${guest_line#run-guest: }"

for i in $(seq 1 "$taken"); do
    grep -q "\"s$i\"" <<<"$listed" || die "snapshot-list does not show s$i: $listed"
done
top=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["file"])' <<<"$info")
chain=$(qemu-img info -U --backing-chain --output=json "$top")
layers=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <<<"$chain")
[ "$layers" = $((taken + 1)) ] || die "expected $((taken + 1)) layers under $top, qemu-img shows $layers: $chain"
for f in $(python3 -c 'import json,sys; print("\n".join(i["filename"] for i in json.load(sys.stdin)))' <<<"$chain"); do
    qemu-img check -q "$f" || die "qemu-img check reports errors in $f"
done
log "qemu-img check: no errors on any of the $layers layers"
log "ok ($taken live snapshots; ${guest_line#run-guest: })"
