# shellcheck shell=bash disable=SC2154,SC2034
# (name is set by the sourcing script; stopped_rc, backend_log and sock are read by it)
# Shared by the guest scenario scripts (qsd-smoke.sh, reconnect.sh, resize.sh): sourced, not run.
#
# The caller sets, before sourcing:
#   name     the script's short name, used in log lines ("qsd-smoke", "resize", ...)
# and after `guest_setup PREFIX`:
#   work     the scenario's temporary folder (removed on exit unless LVSTOR_SMOKE_KEEP=1)
#   sock     the vhost-user socket path inside it
# Back-end selection: LVSTOR_SMOKE_BACKEND=qsd (default, the reference) or lvstor (ours; LVSTOR_VHOST_BLK
# overrides the binary, default the Release build in the tree); LVSTOR_QSD_AIO (default io_uring).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
backend_kind=${LVSTOR_SMOKE_BACKEND:-qsd}
aio=${LVSTOR_QSD_AIO:-io_uring}
M=1048576

log() { echo "$name: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# guest_setup PREFIX [TOOL...]: checks the host tools and the back-end, builds the guest (with fio when
# LVSTOR_GUEST_FIO=1), creates $work and installs the cleanup trap.
guest_setup() {
    local prefix=$1 t
    shift
    for t in qemu-img qemu-io qemu-system-x86_64 "$@"; do
        command -v "$t" >/dev/null || die "$t not found (build-guest.sh installs the QEMU tools)"
    done
    case $backend_kind in
        lvstor)
            backend=${LVSTOR_VHOST_BLK:-$root/src/lvstor-vhost-blk/bin/Release/net10.0/lvstor-vhost-blk}
            [ -x "$backend" ] || die "build the back-end first: dotnet build -c Release src/lvstor-vhost-blk ($backend)";;
        qsd)
            command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found (package qemu-system-common)";;
        lvstord) service_setup;;
        *) die "LVSTOR_SMOKE_BACKEND is qsd, lvstor or lvstord, not '$backend_kind'";;
    esac
    "$here/build-guest.sh" >/dev/null || die "build-guest.sh failed"
    work=$(mktemp -d "${TMPDIR:-/tmp}/lvstor-$prefix.XXXXXX")
    sock=$work/vhost.sock
    trap guest_cleanup EXIT
    trap 'exit 130' INT TERM
}

backend_pid=
guest_pid=
backend_instance=0
lvstor_args=()   # extra options for our back-end; scripts set this after sourcing

# start_backend IMAGE QUEUES [CONTROL]: exports the qcow2 IMAGE on $sock with QUEUES queues, logging to
# $work/backend-N.log (N counts the instances). With CONTROL, also a control socket there: our
# --control-socket, or a QMP monitor for QSD. Extra arguments for our back-end: the array lvstor_args.
start_backend() {
    local image=$1 queues=$2 control=${3:-} i=0
    backend_instance=$((backend_instance + 1))
    backend_log=$work/backend-$backend_instance.log
    rm -f "$sock"   # QSD does not replace a stale socket (ours does)
    if [ "$backend_kind" = lvstor ]; then
        local extra=("${lvstor_args[@]}")
        if [ -n "$control" ]; then extra+=(--control-socket "$control"); fi
        "$backend" --socket-path "$sock" --image "$image" --format qcow2 --direct --num-queues "$queues" \
            "${extra[@]}" </dev/null >"$backend_log" 2>&1 &
    else
        local monitor=()
        # shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
        if [ -n "$control" ]; then
            monitor=(--chardev "socket,id=qmp0,path=$control,server=on,wait=off" --monitor chardev=qmp0,mode=control)
        fi
        qemu-storage-daemon \
            --blockdev "driver=file,node-name=file0,filename=$image,cache.direct=on,aio=$aio" \
            --blockdev driver=qcow2,node-name=disk0,file=file0 \
            --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues" \
            "${monitor[@]}" </dev/null >"$backend_log" 2>&1 &
    fi
    backend_pid=$!
    while { [ ! -S "$sock" ] || { [ -n "$control" ] && [ ! -S "$control" ]; }; } && kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ ! -S "$sock" ] || { [ -n "$control" ] && [ ! -S "$control" ]; }; then
        cat "$backend_log" >&2
        die "$backend_kind back-end $backend_instance did not create its socket(s)"
    fi
    log "$backend_kind back-end $backend_instance (pid $backend_pid) exports $(basename "$image") on $sock (num-queues=$queues)"
}

# stop_backend [SIGNAL]: signals the running back-end (default TERM), waits up to 20 s (then KILL), and sets
# stopped_rc to its exit status.
stopped_rc=
stop_backend() {
    [ -n "$backend_pid" ] || return 0
    local signal=${1:-TERM} i=0
    kill "-$signal" "$backend_pid" 2>/dev/null || true
    while kill -0 "$backend_pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$backend_pid" 2>/dev/null; then
        log "the back-end did not exit on SIG$signal within 20 s, killing it"
        kill -9 "$backend_pid" 2>/dev/null || true
    fi
    stopped_rc=0
    wait "$backend_pid" 2>/dev/null || stopped_rc=$?
    backend_pid=
}

# print_backend_logs: every instance's log on stderr, each line prefixed with the instance.
print_backend_logs() {
    local f
    for f in "$work"/backend-*.log; do
        [ -s "$f" ] && sed "s/^/$backend_kind $(basename "$f" .log): /" "$f" >&2
    done
    return 0
}

# run_guest LOG ARGS...: run-guest.sh in the background and wait for it, so that a SIGTERM to the script is
# handled at once (bash defers traps while a foreground child runs); prints the console, returns its status.
run_guest() {
    local out=$1 rc=0
    shift
    "$here/run-guest.sh" "$@" >"$out" 2>&1 &
    guest_pid=$!
    wait "$guest_pid" || rc=$?
    guest_pid=
    cat "$out"
    return "$rc"
}

guest_cleanup() {
    # run-guest.sh kills its QEMU on TERM
    if [ -n "$guest_pid" ]; then kill "$guest_pid" 2>/dev/null || true; wait "$guest_pid" 2>/dev/null || true; fi
    stop_backend TERM
    service_cleanup
    if [ "${LVSTOR_SMOKE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}

# bytes N[K|M]: N in bytes
bytes() {
    case "$1" in
        *K) echo $(( ${1%K} * 1024 ));;
        *M) echo $(( ${1%M} * M ));;
        *)  echo $(( $1 ));;
    esac
}

# verify_extents IMAGE SIZE MAP: MAP holds contiguous "PATTERN OFFSET LENGTH" lines covering [0, SIZE) of the
# qcow2 IMAGE; PATTERN is a byte (checked with qemu-io read -P) or "fio" (random data fio verified itself: only
# read). Dies on any mismatch; prints how many extents were checked.
verify_extents() {
    local image=$1 size=$2 map=$3 pos=0 pat off len out
    local io_args=()
    while read -r pat off len; do
        [ -n "$pat" ] || continue
        off=$(bytes "$off")
        len=$(bytes "$len")
        [ "$off" = "$pos" ] || die "expected map is not contiguous at $off (script bug)"
        if [ "$pat" = fio ]; then io_args+=(-c "read -q $off $len"); else io_args+=(-c "read -q -P $pat $off $len"); fi
        pos=$((off + len))
    done <<<"$map"
    [ "$pos" = "$size" ] || die "expected map ends at $pos, not $size (script bug)"
    # qemu-io exits 1 and prints "Pattern verification failed at offset ..." on a mismatch; with -q it prints
    # nothing otherwise, so any output at all is a failure too.
    out=$(qemu-io -r -f qcow2 "${io_args[@]}" "$image" 2>&1) || die "qemu-io failed: $out"
    [ -z "$out" ] || die "qemu-io: $out"
    log "qemu-io: all $(( ${#io_args[@]} / 2 )) extents of the $((size / M)) MiB disk hold exactly what the guest wrote"
}

# guest_verdict STATUS LINE: exit 2 on a hang, die on a failure, return on success.
guest_verdict() {
    case $1 in
        0) ;;
        2) log "HANG: $2"; exit 2;;
        *) die "guest task failed: $2";;
    esac
}

# --- lvstord as the back-end (the whole service on a private bus) ----------------------------------------
# service_setup: checks the lvstord and lvstor builds (Release; LVSTORD / LVSTOR override the paths) and
# dbus-daemon. start_service: a private dbus-daemon in $work/bus and lvstord on it with its state in
# $work/state and sockets under $work/run; lv ARGS...: the lvstor CLI on that bus. stop_service [SIGNAL].
lvstord_bin=${LVSTORD:-$root/src/lvstord/bin/Release/net10.0/lvstord}
lvstor_bin=${LVSTOR:-$root/src/lvstor/bin/Release/net10.0/lvstor}
bus_pid=
service_pid=
service_setup() {
    [ -x "$lvstord_bin" ] || die "build lvstord first: dotnet build -c Release src/lvstord ($lvstord_bin)"
    [ -x "$lvstor_bin" ] || die "build the CLI first: dotnet build -c Release src/lvstor ($lvstor_bin)"
    command -v dbus-daemon >/dev/null || die "dbus-daemon not found (package dbus-daemon)"
}

start_service() {
    local i=0
    mkdir -p "$work/bus" "$work/state" "$work/run"
    if [ -z "$bus_pid" ]; then
        cat >"$work/bus/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>lvstor-guest-test</type>
  <listen>unix:path=$work/bus/socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/> <allow send_destination="*"/>
    <allow send_type="*"/> <allow receive_type="*"/>
  </policy>
</busconfig>
CONF
        dbus-daemon --nofork --nopidfile --config-file="$work/bus/bus.conf" >/dev/null 2>"$work/bus/log" &
        bus_pid=$!
        while [ ! -S "$work/bus/socket" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        [ -S "$work/bus/socket" ] || die "dbus-daemon did not start: $(cat "$work/bus/log")"
    fi
    bus_address=unix:path=$work/bus/socket
    # A config of our own: the embedded default, minus its default pool (nothing outside $work).
    printf 'pools: []\nlogging: { level: information, format: simple }\n' >"$work/lvstord.yaml"
    backend_instance=$((backend_instance + 1))
    backend_log=$work/backend-$backend_instance.log
    "$lvstord_bin" --config "$work/lvstord.yaml" --bus "$bus_address" --state-dir "$work/state" \
        --runtime-dir "$work/run" </dev/null >"$backend_log" 2>&1 &
    service_pid=$!
    backend_pid=$service_pid   # so that guest_cleanup and stop_backend stop it too
    i=0
    until lv status >/dev/null 2>&1; do
        kill -0 "$service_pid" 2>/dev/null || { cat "$backend_log" >&2; die "lvstord exited at start"; }
        [ $i -lt 300 ] || { cat "$backend_log" >&2; die "lvstord did not answer on the bus within 30 s"; }
        sleep 0.1
        i=$((i + 1))
    done
    log "lvstord $backend_instance (pid $service_pid) on $bus_address"
}

lv() { "$lvstor_bin" --bus "$bus_address" "$@"; }

stop_service() {
    stop_backend "${1:-TERM}"
    service_pid=
}

service_cleanup() {
    if [ -n "$bus_pid" ]; then kill "$bus_pid" 2>/dev/null || true; wait "$bus_pid" 2>/dev/null || true; bus_pid=; fi
}

# start_fio_guest SOCK JOBS OFFSET: boots the test guest on SOCK in the background, running fio JOBS (with
# verify) from OFFSET; its console goes to $console, its log to $work/guest.log, its pid to $guest_pid.
start_fio_guest() {
    console=$work/console.log
    : >"$console"
    LVSTOR_GUEST_TIMEOUT=$timeout_s LVSTOR_GUEST_CONSOLE=$console \
        "$here/run-guest.sh" "$1" fio fiooff="$3" fio="$2" >"$work/guest.log" 2>&1 &
    guest_pid=$!
}

# wait_console PATTERN: until the guest printed PATTERN (or exited / timed out after $timeout_s).
wait_console() {
    local deadline=$(( $(date +%s) + timeout_s ))
    until grep -aq "$1" "$console"; do
        kill -0 "$guest_pid" 2>/dev/null || return 1
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
