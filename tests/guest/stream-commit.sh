#!/bin/bash
# Live stream and commit of a running guest's disk through lvstord (issue 6's acceptance with a real guest):
#
# 1. A private dbus-daemon and lvstord; `lvstor` makes a pool and a 320 MiB qcow2 volume, uploads 64 MiB of
#    random data at offset 0 (vol-upload) and takes snapshot s1: that data lives only in s1's layer.
# 2. The test guest boots on the volume's socket and runs fio with verify=crc32c from 128 MiB on: random 4K
#    writes at QD32, then 1M sequential writes, each job verifying what it wrote at the end.
# 3. During the first job `lvstor stream` (speed-limited, so it overlaps the writes) copies s1's layer into the
#    top and drops it; then `lvstor snapshot s2`; during the second job `lvstor commit` merges the top into s2's
#    layer, which becomes the volume's top file.
# 4. lvstord is stopped (SIGTERM). The volume has no snapshot left and its file is s2's former layer; qemu-img
#    info shows that single layer with no backing file, qemu-img check is clean, the streamed-away s1 layer and
#    the committed top are deleted, and the uploaded 64 MiB read back unchanged (qemu-io compare via qemu-img).
#
# Exit status: 0 ok, 1 fail, 2 guest hang. Env: LVSTOR_GUEST_TIMEOUT (default 300), LVSTOR_SMOKE_KEEP=1,
# LVSTOR_STREAM_COMMIT_FIO (fio jobs, default randwrite:4k:32:64M,write:1M:8:128M), LVSTORD / LVSTOR (binaries).
set -euo pipefail

name=stream-commit
LVSTOR_SMOKE_BACKEND=lvstord
. "$(dirname "$0")/lib.sh"
timeout_s=${LVSTOR_GUEST_TIMEOUT:-300}
LVSTOR_GUEST_FIO=1 guest_setup stream-commit

start_service
lv pool-define-as guests "$work/pool" >/dev/null
lv pool-start guests >/dev/null
lv vol-create-as guests vm1 320M --format qcow2 >/dev/null
head -c $((64 * M)) /dev/urandom >"$work/lower.bin"
lv vol-upload vm1 "$work/lower.bin" --pool guests >/dev/null
lv snapshot vm1 s1 --pool guests >/dev/null
s1_file=$(lv snapshot-list vm1 --pool guests --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["file"])')
sock=$(lv vol-path vm1 --pool guests)
[ -S "$sock" ] || die "the volume's path $sock is not a socket"
log "volume vm1 exported on $sock; 64 MiB uploaded into snapshot s1's layer $s1_file"

# --- guest with fio; stream, then commit, while it writes --------------------------------------------------
jobs=${LVSTOR_STREAM_COMMIT_FIO:-randwrite:4k:32:64M,write:1M:8:128M}
start_fio_guest "$sock" "$jobs" 128M

# live_job JOB ARGS...: runs `lvstor JOB vm1 ARGS...` (waiting for it) and fails unless the guest was still
# running when the job started.
live_job() {
    local job=$1 t0 out
    shift
    kill -0 "$guest_pid" 2>/dev/null || die "the guest ended before the $job could start ($(tail -3 "$work/guest.log"))"
    t0=$(date +%s.%N)
    out=$(lv "$job" vm1 --pool guests "$@" 2>&1) || die "lvstor $job failed: $out"
    log "$job done during fio in $(echo "$t0 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}') s (guest $(kill -0 "$guest_pid" 2>/dev/null && echo still writing || echo done by then))"
}

first=${jobs%%,*}
second=${jobs#*,}
second=${second%%,*}
wait_console "fio $first start" || die "fio $first did not start ($(tail -3 "$work/guest.log"))"
sleep "${LVSTOR_STREAM_COMMIT_DELAY:-3}"   # inside the job's write phase
live_job stream --speed 32M
out=$(lv snapshot vm1 s2 --pool guests 2>&1) || die "lvstor snapshot s2 failed: $out"
s2_file=$(lv snapshot-list vm1 --pool guests --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["file"])')
wait_console "fio $second start" || die "fio $second did not start ($(tail -3 "$work/guest.log"))"
sleep "${LVSTOR_STREAM_COMMIT_DELAY:-3}"
old_top=$(lv vol-info vm1 --pool guests --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["file"])')
live_job commit --speed 16M

grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1)

# --- host-side checks -----------------------------------------------------------------------------------
listed=$(lv snapshot-list vm1 --pool guests --json)
info=$(lv vol-info vm1 --pool guests --json)
stop_service TERM
print_backend_logs
[ "$stopped_rc" = 0 ] || die "lvstord exited with $stopped_rc on SIGTERM"
guest_verdict "$grc" "${guest_line#run-guest: }"

[ "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <<<"$listed")" = 0 ] || die "snapshots are left after stream and commit: $listed"
top=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["file"])' <<<"$info")
[ "$top" = "$s2_file" ] || die "after the commit the volume's file is $top, not s2's layer $s2_file"
for gone in "$s1_file" "$old_top"; do
    [ ! -e "$gone" ] || die "$gone should have been deleted (merged by the stream or the commit)"
done
chain=$(qemu-img info --backing-chain --output=json "$top")
python3 -c '
import json, sys
chain = json.load(sys.stdin)
assert len(chain) == 1 and "backing-filename" not in chain[0], "expected a single layer without backing: %r" % chain
' <<<"$chain" || die "qemu-img info --backing-chain: $chain"
qemu-img check -q "$top" || die "qemu-img check reports errors in $top"
qemu-img convert -f qcow2 -O raw "$top" "$work/final.raw"
cmp -n $((64 * M)) "$work/lower.bin" "$work/final.raw" || die "the 64 MiB uploaded before s1 changed"
log "one layer left ($top), qemu-img check clean, the uploaded 64 MiB intact"
log "ok (stream and commit during fio; ${guest_line#run-guest: })"
