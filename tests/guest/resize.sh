#!/bin/bash
# Live resize in a real guest: the disk grows while the guest runs, the guest sees the new capacity without a
# reboot (virtio config-change interrupt) and writes past the old end.
#
#   resize.sh                          against qemu-storage-daemon (QMP block_resize), the reference
#   LVSTOR_SMOKE_BACKEND=lvstor resize.sh   against lvstor-vhost-blk (--control-socket "resize SIZE")
#
# 1. base.raw (1 GiB, 0x11 in [0, 64M)) and overlay.qcow2 (1 GiB) on top of it, as in qsd-smoke.sh.
# 2. The back-end exports overlay.qcow2; the guest boots with task=resize: it checks the backing data, prints
#    "lvstor: waiting for resize to 1610612736" and polls /sys/block/vda/size, with O_DIRECT reads and zero
#    writes running in the background until the new size shows (the resize happens under I/O).
# 3. On that console line the script grows the export to 1536 MiB (control socket or QMP). The guest sees
#    the new size, writes 0x6f@1020M+8M (across the old end), 0x5e@1100M+4M and 0xa7@1532M+4M (the new last
#    4 MiB) with O_DIRECT, reads them back and reports.
# 4. After power-off and back-end stop: qemu-img check clean, qemu-img info shows 1536 MiB, qemu-io reads the
#    exact expected content of the whole grown disk, and base.raw is unchanged.
#
# Exit status: 0 ok, 1 fail, 2 guest hang (run-guest.sh's watchdog fired).
# Env: LVSTOR_SMOKE_BACKEND=qsd|lvstor (default qsd), LVSTOR_VHOST_BLK (path of lvstor-vhost-blk),
#      LVSTOR_RESIZE_DELAY (seconds between the guest's prompt and the resize, default 2),
#      LVSTOR_RESIZE_WAIT (how long the guest waits for the new size, default 60),
#      LVSTOR_GUEST_TIMEOUT (default 120), LVSTOR_QSD_AIO (default io_uring), LVSTOR_SMOKE_KEEP=1 keeps the work folder.
set -euo pipefail

name=resize
. "$(dirname "$0")/lib.sh"
timeout_s=${LVSTOR_GUEST_TIMEOUT:-120}
guest_setup resize python3

old_size=$((1024 * M))
new_size=$((1536 * M))

# --- images -------------------------------------------------------------------------------------
qemu-img create -q -f raw "$work/base.raw" "$old_size"
qemu-io -f raw -c "write -q -P 0x11 0 64M" "$work/base.raw" >/dev/null
qemu-img create -q -f qcow2 -F raw -b base.raw "$work/overlay.qcow2" "$old_size"
base_md5=$(md5sum < "$work/base.raw")

guest_expect="0x11@0M+1M,0x11@63M+1M,0x00@64M+1M"
guest_writes="0x6f@1020M+8M,0x5e@1100M+4M,0xa7@1532M+4M"
expected_map="
0x11 0 64M
0x00 64M 956M
0x6f 1020M 8M
0x00 1028M 72M
0x5e 1100M 4M
0x00 1104M 428M
0xa7 1532M 4M
"

# --- back-end -----------------------------------------------------------------------------------
control=$work/control.sock
start_backend "$work/overlay.qcow2" 1 "$control"

# grow SIZE: one request on the control socket, prints the answer; fails unless the back-end says ok.
grow() {
    timeout 30 python3 - "$backend_kind" "$control" "$1" <<'PY'
import json, socket, sys
kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(path)
f = s.makefile("rwb")
def line():
    l = f.readline()
    if not l: sys.exit("connection closed")
    return json.loads(l)
if kind == "lvstor":
    f.write(b"resize %d\n" % size); f.flush()
    r = line(); print(json.dumps(r))
    sys.exit(0 if r.get("ok") and r.get("capacity") == size else 1)
line()                                              # QMP greeting
def qmp(cmd, **args):
    f.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n"); f.flush()
    while True:
        r = line()
        if "event" not in r:                        # skip asynchronous events
            return r
qmp("qmp_capabilities")
r = qmp("block_resize", **{"node-name": "disk0", "size": size}); print(json.dumps(r))
sys.exit(0 if "return" in r else 1)
PY
}

# --- guest ----------------------------------------------------------------------------------------
console=$work/console.log
: >"$console"
LVSTOR_GUEST_CONSOLE=$console "$here/run-guest.sh" "$sock" resize size=1G newsize=$new_size resizewait=${LVSTOR_RESIZE_WAIT:-60} resizeio=1 \
    expect="$guest_expect" write="$guest_writes" >"$work/guest.log" 2>&1 &
guest_pid=$!
deadline=$(( $(date +%s) + timeout_s ))
while ! grep -aq "^lvstor: waiting for resize to $new_size" "$console"; do
    kill -0 "$guest_pid" 2>/dev/null || break
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 0.2
done
grew=0
if grep -aq "^lvstor: waiting for resize to $new_size" "$console"; then
    sleep "${LVSTOR_RESIZE_DELAY:-2}"   # let the guest's background I/O get going, so the resize happens under it
    t0=$(date +%s.%N)
    if answer=$(grow "$new_size" 2>&1); then
        grew=1
        log "grown to $new_size in $(echo "$t0 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}') s: $answer"
    else
        log "grow failed: $answer"
    fi
else
    log "the guest never asked for the resize"
fi
grc=0
wait "$guest_pid" || grc=$?
guest_pid=
cat "$work/guest.log"
guest_line=$(grep -a '^run-guest: ' "$work/guest.log" | tail -1 || true)
stop_backend
print_backend_logs
guest_verdict "$grc" "${guest_line#run-guest: }"
[ $grew = 1 ] || die "the guest reported ok without a resize (script bug)"
log "guest: $(grep -a '^lvstor: resized to' "$work/guest.log" | tail -1)"
log "guest: $(grep -a '^lvstor: background I/O' "$work/guest.log" | tail -1)"

# --- host-side verification -----------------------------------------------------------------------
qemu-img check -q "$work/overlay.qcow2" || die "qemu-img check reports errors"
vsize=$(qemu-img info --output=json "$work/overlay.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
[ "$vsize" = "$new_size" ] || die "qemu-img info: virtual size $vsize, expected $new_size"
log "qemu-img check: no errors; qemu-img info: virtual size $vsize"

verify_extents "$work/overlay.qcow2" "$new_size" "$expected_map"
[ "$(md5sum < "$work/base.raw")" = "$base_md5" ] || die "the raw backing file changed"
log "base.raw untouched"
log "ok ($backend_kind, ${guest_line#run-guest: })"
