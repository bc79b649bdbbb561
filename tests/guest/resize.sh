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

here=$(cd "$(dirname "$0")" && pwd)
backend_kind=${LVSTOR_SMOKE_BACKEND:-qsd}
aio=${LVSTOR_QSD_AIO:-io_uring}
timeout_s=${LVSTOR_GUEST_TIMEOUT:-120}

log() { echo "resize: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

case $backend_kind in qsd|lvstor) ;; *) die "LVSTOR_SMOKE_BACKEND is qsd or lvstor, not '$backend_kind'";; esac
for t in qemu-img qemu-io qemu-storage-daemon qemu-system-x86_64 python3; do
    command -v "$t" >/dev/null || die "$t not found (build-guest.sh installs the QEMU tools)"
done
"$here/build-guest.sh" >/dev/null || die "build-guest.sh failed"

work=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-resize.XXXXXX")
backend_pid=
guest_pid=
stop_backend() {
    [ -n "$backend_pid" ] || return 0
    kill "$backend_pid" 2>/dev/null || true
    local i=0
    while kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$backend_pid" 2>/dev/null; then
        log "the back-end did not exit on SIGTERM within 10 s, killing it"
        kill -9 "$backend_pid" 2>/dev/null || true
    fi
    wait "$backend_pid" 2>/dev/null || true
    backend_pid=
}
cleanup() {
    if [ -n "$guest_pid" ]; then kill "$guest_pid" 2>/dev/null || true; wait "$guest_pid" 2>/dev/null || true; fi
    stop_backend
    if [ "${LVSTOR_SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

M=1048576
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
sock=$work/vhost.sock
control=$work/control.sock
if [ "$backend_kind" = lvstor ]; then
    root=$(cd "$here/../.." && pwd)
    backend=${LVSTOR_VHOST_BLK:-$root/src/lvstor-vhost-blk/bin/Release/net10.0/lvstor-vhost-blk}
    [ -x "$backend" ] || die "build the back-end first: dotnet build -c Release src/lvstor-vhost-blk ($backend)"
    "$backend" --socket-path "$sock" --image "$work/overlay.qcow2" --format qcow2 --direct --control-socket "$control" \
        </dev/null >"$work/backend.log" 2>&1 &
else
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=file0,filename=$work/overlay.qcow2,cache.direct=on,aio=$aio" \
        --blockdev driver=qcow2,node-name=disk0,file=file0 \
        --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1" \
        --chardev "socket,id=qmp0,path=$control,server=on,wait=off" --monitor chardev=qmp0,mode=control \
        </dev/null >"$work/backend.log" 2>&1 &
fi
backend_pid=$!
i=0
while { [ ! -S "$sock" ] || [ ! -S "$control" ]; } && kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$sock" ] && [ -S "$control" ] || { cat "$work/backend.log" >&2; die "the back-end did not create $sock and $control"; }
log "$backend_kind (pid $backend_pid) exports overlay.qcow2 on $sock, control on $control"

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
if [ -s "$work/backend.log" ]; then sed "s/^/$backend_kind: /" "$work/backend.log" >&2; fi
case $grc in
    0) ;;
    2) log "HANG: ${guest_line#run-guest: }"; exit 2;;
    *) die "guest task failed: ${guest_line#run-guest: }";;
esac
[ $grew = 1 ] || die "the guest reported ok without a resize (script bug)"
log "guest: $(grep -a '^lvstor: resized to' "$work/guest.log" | tail -1)"
log "guest: $(grep -a '^lvstor: background I/O' "$work/guest.log" | tail -1)"

# --- host-side verification -----------------------------------------------------------------------
qemu-img check -q "$work/overlay.qcow2" || die "qemu-img check reports errors"
vsize=$(qemu-img info --output=json "$work/overlay.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
[ "$vsize" = "$new_size" ] || die "qemu-img info: virtual size $vsize, expected $new_size"
log "qemu-img check: no errors; qemu-img info: virtual size $vsize"

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
    io_args+=(-c "read -q -P $pat $off $len")
    pos=$((off + len))
done <<<"$expected_map"
[ "$pos" = "$new_size" ] || die "expected_map ends at $pos, not $new_size (script bug)"
out=$(qemu-io -r -f qcow2 "${io_args[@]}" "$work/overlay.qcow2" 2>&1) || die "qemu-io failed: $out"
[ -z "$out" ] || die "qemu-io: $out"
log "qemu-io: all $(( ${#io_args[@]} / 2 )) extents of the grown 1.5 GiB disk hold exactly what the guest wrote"
[ "$(md5sum < "$work/base.raw")" = "$base_md5" ] || die "the raw backing file changed"
log "base.raw untouched"
log "ok ($backend_kind, ${guest_line#run-guest: })"
