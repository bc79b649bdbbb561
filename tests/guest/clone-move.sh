#!/bin/bash
# A live clone and a base move under a running guest, through lvstord (issue 6's acceptance with a real guest):
#
# 1. A private dbus-daemon and lvstord with two pools, `guests` and `local`. `lvstor` makes a 320 MiB qcow2 base
#    `golden` in `guests`, uploads 64 MiB of random data into it, and makes `vm1`, a linked clone over `golden`.
# 2. The test guest boots on vm1's socket and runs fio with verify=crc32c from 128 MiB on: random 4K writes at
#    QD32, then 1M sequential writes, each job verifying what it wrote at the end.
# 3. During the first job `lvstor vol-clone vm1 copy1` makes a full copy of the running volume (a temporary
#    snapshot, the copy with the guest running, then a live commit back); during the second `lvstor base-move
#    golden local` copies the base to pool `local` and re-points vm1 to it.
# 4. lvstord is stopped (SIGTERM). vm1 reads the moved base (qemu-img info --backing-chain: vm1 <- local/golden),
#    the old base file is gone, vm1 has no snapshot left, copy1 stands alone, qemu-img check is clean on every
#    file, and the uploaded 64 MiB read back unchanged through vm1 and through copy1.
#
# Exit status: 0 ok, 1 fail, 2 guest hang. Env: LVSTOR_GUEST_TIMEOUT (default 300), LVSTOR_SMOKE_KEEP=1,
# LVSTOR_CLONE_MOVE_FIO (fio jobs, default randwrite:4k:32:64M,write:1M:8:128M), LVSTORD / LVSTOR (binaries).
set -euo pipefail

name=clone-move
LVSTOR_SMOKE_BACKEND=lvstord
. "$(dirname "$0")/lib.sh"
timeout_s=${LVSTOR_GUEST_TIMEOUT:-300}
LVSTOR_GUEST_FIO=1 guest_setup clone-move

start_service
lv pool-define-as guests "$work/pool" >/dev/null
lv pool-start guests >/dev/null
lv pool-define-as local "$work/local" >/dev/null
lv pool-start local >/dev/null
lv vol-create-as guests golden 320M --format qcow2 >/dev/null
head -c $((64 * M)) /dev/urandom >"$work/lower.bin"
lv vol-upload golden "$work/lower.bin" --pool guests >/dev/null
old_base=$(lv vol-info golden --pool guests --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["file"])')
lv vol-create-as guests vm1 320M --format qcow2 --backing-vol golden >/dev/null
sock=$(lv vol-path vm1 --pool guests)
[ -S "$sock" ] || die "the volume's path $sock is not a socket"
log "vm1 (linked clone over golden, 64 MiB uploaded into golden) exported on $sock"

# --- guest with fio; clone, then base move, while it writes -------------------------------------------------
jobs=${LVSTOR_CLONE_MOVE_FIO:-randwrite:4k:32:64M,write:1M:8:128M}
start_fio_guest "$sock" "$jobs" 128M

# during_fio WHAT CMD...: runs `lvstor CMD...` and fails unless the guest was still running when it started.
during_fio() {
    local what=$1 t0 out
    shift
    kill -0 "$guest_pid" 2>/dev/null || die "the guest ended before the $what could start ($(tail -3 "$work/guest.log"))"
    t0=$(date +%s.%N)
    out=$(lv "$@" 2>&1) || die "lvstor $* failed: $out"
    log "$what done during fio in $(echo "$t0 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}') s (guest $(kill -0 "$guest_pid" 2>/dev/null && echo still writing || echo done by then))"
}

first=${jobs%%,*}
second=${jobs#*,}
second=${second%%,*}
wait_console "fio $first start" || die "fio $first did not start ($(tail -3 "$work/guest.log"))"
sleep "${LVSTOR_CLONE_MOVE_DELAY:-3}"   # inside the job's write phase
during_fio "full clone of the running vm1" vol-clone vm1 copy1 --pool guests
wait_console "fio $second start" || die "fio $second did not start ($(tail -3 "$work/guest.log"))"
sleep "${LVSTOR_CLONE_MOVE_DELAY:-3}"
during_fio "base move of golden to pool local" base-move golden local --pool guests

grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1)

# --- host-side checks -----------------------------------------------------------------------------------
vm1=$(lv vol-info vm1 --pool guests --json)
copy1=$(lv vol-info copy1 --pool guests --json)
moved=$(lv vol-info golden --pool local --json)
listed=$(lv snapshot-list vm1 --pool guests --json)
stop_service TERM
print_backend_logs
[ "$stopped_rc" = 0 ] || die "lvstord exited with $stopped_rc on SIGTERM"
guest_verdict "$grc" "${guest_line#run-guest: }"

field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
vm1_file=$(field file <<<"$vm1")
copy1_file=$(field file <<<"$copy1")
new_base=$(field file <<<"$moved")
[ "$new_base" = "$work/local/golden" ] || die "golden is at $new_base, not in pool local"
[ ! -e "$old_base" ] || die "the old base $old_base should have been deleted after the move"
[ "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <<<"$listed")" = 0 ] || die "the live clone left a snapshot on vm1: $listed"
chain=$(qemu-img info --backing-chain --output=json "$vm1_file")
CHAIN=$chain python3 - "$vm1_file" "$new_base" <<'PY' || die "qemu-img info --backing-chain of vm1: $chain"
import json, os, sys
chain = json.loads(os.environ["CHAIN"])
files = [layer["filename"] for layer in chain]
assert files == sys.argv[1:], "expected %r, got %r" % (sys.argv[1:], files)
PY
copy_chain=$(qemu-img info --backing-chain --output=json "$copy1_file")
python3 -c 'import json,sys; c = json.load(sys.stdin); assert len(c) == 1 and "backing-filename" not in c[0], c' <<<"$copy_chain" \
    || die "copy1 is not a standalone image: $copy_chain"
for f in "$vm1_file" "$new_base" "$copy1_file"; do
    qemu-img check -q "$f" || die "qemu-img check reports errors in $f"
done
qemu-img convert -O raw "$vm1_file" "$work/vm1.raw"
cmp -n $((64 * M)) "$work/lower.bin" "$work/vm1.raw" || die "vm1 no longer reads the uploaded 64 MiB from the moved base"
qemu-img convert -O raw "$copy1_file" "$work/copy1.raw"
cmp -n $((64 * M)) "$work/lower.bin" "$work/copy1.raw" || die "copy1 does not hold the uploaded 64 MiB"
log "vm1 <- local/golden, old base deleted, copy1 standalone, qemu-img check clean, the uploaded 64 MiB intact in both"
log "ok (live clone and base move during fio; ${guest_line#run-guest: })"
