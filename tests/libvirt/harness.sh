#!/bin/bash
# A private libvirt world for the libvirt end-to-end tests: a mount + network namespace with its own /run,
# /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt (a copy), a dbus-daemon as the
# system bus at /run/dbus/system_bus_socket, lvstord on that bus and a monolithic libvirtd that loads our
# storage module. Nothing outside WORK and the namespace is touched; every process is stopped by its PID.
#
#   harness.sh COMMAND [ARGS...]        (state in $LVH_WORK, which must be set; see README.md)
#
#   up                    namespace + bus + lvstord + libvirtd (no-op for the parts already running)
#   down                  stops everything (domains are destroyed first) and removes the namespace
#   start-ns | start-bus | start-lvstord | start-libvirtd [--strace FILE]
#   stop-lvstord [SIGNAL] | stop-libvirtd | stop-bus | stop-ns
#   virsh ARGS...         virsh -c qemu:///system inside the namespace; its exit code and output
#   exec CMD ARGS...      any command inside the namespace (cwd = $LVH_WORK)
#   pid NAME              the PID of ns|bus|lvstord|libvirtd, or exit 1 if it is not running
#   missing               prints the first thing this machine lacks (tool or module), or nothing
#
# Env: LVH_WORK (required), LVSTORD (lvstord apphost; default the Debug build), LVH_MODULE (the storage module;
# default native-shim/build/libvirt_storage_backend_zfs.so), LVH_LIBVIRTD (default /usr/sbin/libvirtd).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${LVH_WORK:?set LVH_WORK to the harness work folder}
lvstord_bin=${LVSTORD:-$root/src/lvstord/bin/Debug/net10.0/lvstord}
module=${LVH_MODULE:-$root/native-shim/build/libvirt_storage_backend_zfs.so}
libvirtd_bin=${LVH_LIBVIRTD:-/usr/sbin/libvirtd}
stock_backends=/usr/lib/x86_64-linux-gnu/libvirt/storage-backend
stock_drivers=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver
bus_socket=/run/dbus/system_bus_socket

die() { echo "harness: $*" >&2; exit 1; }
log() { echo "harness: $*" >&2; }

# --- PIDs: one file per process; a PID counts only while it is alive and runs the expected program. --------
pid_of() {  # pid_of NAME -> prints the PID, status 1 if not running
    local f=$work/pids/$1 pid comm
    [ -f "$f" ] || return 1
    read -r pid comm <"$f"
    [ -d "/proc/$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    echo "$pid"
}

remember() {  # remember NAME PID COMM: records the PID once it runs COMM (after the fork/nsenter/env execs)
    local comm i=0
    comm=$(cat "/proc/$2/comm" 2>/dev/null || true)
    while [ "$comm" != "$3" ] && [ -d "/proc/$2" ] && [ $i -lt 100 ]; do
        sleep 0.05; i=$((i + 1)); comm=$(cat "/proc/$2/comm" 2>/dev/null || true)
    done
    mkdir -p "$work/pids"
    echo "$2 $3" >"$work/pids/$1"
}

stop_pid() {  # stop_pid NAME [SIGNAL]: signal, wait up to 15 s, then SIGKILL
    local pid i=0
    pid=$(pid_of "$1") || { rm -f "$work/pids/$1"; return 0; }
    kill -"${2:-TERM}" "$pid" 2>/dev/null || true
    while [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && [ $i -lt 150 ]; do
        sleep 0.1; i=$((i + 1))
    done
    if [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        log "$1 (pid $pid) ignored SIG${2:-TERM} for 15 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$work/pids/$1"
}

in_ns() {  # in_ns CMD...: runs CMD inside the namespace
    local ns
    ns=$(pid_of ns) || die "the namespace is not running (harness.sh start-ns)"
    nsenter -t "$ns" -m -n --wd="$work" -- "$@"
}

spawn() {  # spawn NAME CMD...: starts CMD in the background inside the namespace, output to logs/NAME.log
    local name=$1 ns
    shift
    ns=$(pid_of ns) || die "the namespace is not running (harness.sh start-ns)"
    # nsenter execs CMD (no PID namespace), so $! is CMD's own PID once the exec happened.
    nsenter -t "$ns" -m -n --wd="$work" -- "$@" </dev/null >>"$work/logs/$name.log" 2>&1 &
    spawned=$!
}

wait_for() {  # wait_for WHAT SECONDS NAME CMD...: polls CMD every 0.1 s while process NAME lives
    local what=$1 limit=$(( $2 * 10 )) name=$3 i=0
    shift 3
    until "$@" >/dev/null 2>&1; do
        pid_of "$name" >/dev/null || die "$what exited at start; log: $(tail -n 20 "$work/logs/$name.log" 2>/dev/null)"
        [ $i -lt $limit ] || die "$what did not become ready within $((limit / 10)) s; log: $(tail -n 20 "$work/logs/$name.log" 2>/dev/null)"
        sleep 0.1; i=$((i + 1))
    done
}

missing() {
    local tool
    for tool in unshare nsenter dbus-daemon busctl strace virsh qemu-system-x86_64; do
        command -v "$tool" >/dev/null 2>&1 || { echo "$tool"; return 0; }
    done
    [ -x "$libvirtd_bin" ] || { echo "$libvirtd_bin (package libvirt-daemon-system)"; return 0; }
    [ -f "$stock_drivers/libvirt_driver_storage.so" ] || { echo "libvirt's storage driver (package libvirt-daemon-driver-storage... libvirt-daemon-system)"; return 0; }
    [ -x "$lvstord_bin" ] || { echo "lvstord build ($lvstord_bin: dotnet build src/lvstord)"; return 0; }
    [ "$module" = none ] || [ -f "$module" ] || { echo "the storage module ($module: make shim)"; return 0; }
    [ "$(id -u)" = 0 ] || { echo "root (unshare --mount needs it)"; return 0; }
    return 0
}

# --- the namespace --------------------------------------------------------------------------------------------
start_ns() {
    pid_of ns >/dev/null && return 0
    mkdir -p "$work/logs" "$work/pids" "$work/etc-libvirt" "$work/backends" "$work/drivers" "$work/lvstord-state" "$work/pools"
    # The holder process: `sleep` in a new mount + network namespace whose mounts propagate nowhere. The
    # namespace lives as long as any process in it; everything else joins it with nsenter.
    setsid unshare --mount --net --propagation private sleep infinity </dev/null >"$work/logs/ns.log" 2>&1 &
    local holder=$! i=0
    while [ "$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" = "$(readlink /proc/self/ns/mnt)" ] && [ $i -lt 50 ]; do
        sleep 0.05; i=$((i + 1))
    done
    remember ns "$holder" sleep

    # /etc/libvirt: a copy without autostarted networks or domains and without any pool of the host, plus the
    # settings a private daemon needs: no polkit (auth none on the root-only socket), no virtlogd
    # (stdio_handler file), QEMU as root so it can reach lvstord's sockets.
    rm -rf "$work/etc-libvirt"
    cp -a /etc/libvirt "$work/etc-libvirt"
    rm -rf "$work/etc-libvirt/qemu/networks/autostart" "$work/etc-libvirt/qemu/autostart" "$work/etc-libvirt/storage"
    find "$work/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete
    printf '\n# LibvirtStorage test harness\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nunix_sock_rw_perms = "0700"\n' \
        >>"$work/etc-libvirt/libvirtd.conf"
    printf '\n# LibvirtStorage test harness\nstdio_handler = "file"\nuser = "root"\ngroup = "root"\nremember_owner = 0\n' \
        >>"$work/etc-libvirt/qemu.conf"

    in_ns mount -t tmpfs -o mode=0755 tmpfs /run
    in_ns mkdir -p /run/dbus /run/lock /run/lvstor
    in_ns mount -t tmpfs -o mode=0755 tmpfs /var/lib/libvirt 2>/dev/null || { in_ns mkdir -p /var/lib/libvirt; in_ns mount -t tmpfs -o mode=0755 tmpfs /var/lib/libvirt; }
    in_ns mkdir -p /var/cache/libvirt /var/log/libvirt
    in_ns mount -t tmpfs -o mode=0755 tmpfs /var/cache/libvirt
    in_ns mount -t tmpfs -o mode=0755 tmpfs /var/log/libvirt
    in_ns mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu
    in_ns mount --bind "$work/etc-libvirt" /etc/libvirt
    in_ns ip link set lo up 2>/dev/null || true
    log "namespace holder pid $holder"
}

stop_ns() {
    stop_pid ns KILL
}

# --- the system bus -------------------------------------------------------------------------------------------
start_bus() {
    pid_of bus >/dev/null && return 0
    # The stock system bus's default policy (deny by default) plus lvstord's packaged policy, so the test also
    # proves that policy lets root's libvirtd reach lvstord.
    cat >"$work/system-bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$bus_socket</listen>
  <auth>EXTERNAL</auth>
  <include>$root/tests/dbus/system-default-policy.conf</include>
  <include>$root/packaging/dbus-1/system.d/org.lvstor.Storage1.conf</include>
</busconfig>
CONF
    spawn bus dbus-daemon --nofork --nopidfile --config-file="$work/system-bus.conf"
    remember bus "$spawned" dbus-daemon
    wait_for "dbus-daemon" 10 bus in_ns test -S "$bus_socket"
    log "system bus pid $(pid_of bus) at $bus_socket"
}

stop_bus() { stop_pid bus; }

# --- lvstord --------------------------------------------------------------------------------------------------
lvstord_ready() {
    in_ns busctl --system --timeout=2 call org.lvstor.Storage1 /org/lvstor/Storage1 org.freedesktop.DBus.Peer Ping
}

start_lvstord() {
    pid_of lvstord >/dev/null && return 0
    [ -x "$lvstord_bin" ] || die "lvstord not built: $lvstord_bin (dotnet build src/lvstord)"
    printf 'pools: []\nlogging: { level: information, format: simple }\n' >"$work/lvstord.yaml"
    echo "--- start $(date -u +%T.%N)" >>"$work/logs/lvstord.log"
    spawn lvstord "$lvstord_bin" --config "$work/lvstord.yaml" --bus "unix:path=$bus_socket" \
        --state-dir "$work/lvstord-state" --runtime-dir /run/lvstor
    remember lvstord "$spawned" lvstord
    wait_for "lvstord" 60 lvstord lvstord_ready
    log "lvstord pid $(pid_of lvstord)"
}

stop_lvstord() { stop_pid lvstord "${1:-TERM}"; }

# --- libvirtd -------------------------------------------------------------------------------------------------
libvirtd_ready() { in_ns virsh -q -c qemu:///system uri; }

start_libvirtd() {
    local strace_file=
    if [ "${1:-}" = --strace ]; then strace_file=${2:?--strace FILE}; fi
    pid_of libvirtd >/dev/null && return 0
    [ -x "$libvirtd_bin" ] || die "$libvirtd_bin not found (package libvirt-daemon-system)"
    [ "$module" = none ] || [ -f "$module" ] || die "storage module not built: $module (make shim)"
    # The stock storage backends plus ours in the zfs slot; only the drivers the tests use (no network or
    # nwfilter driver touching firewalls, no nodedev udev scans).
    rm -rf "$work/backends" "$work/drivers"
    mkdir -p "$work/backends" "$work/drivers"
    local f
    for f in "$stock_backends"/*.so; do ln -s "$f" "$work/backends/"; done
    rm -f "$work/backends/libvirt_storage_backend_zfs.so"
    # LVH_MODULE=none: the stock backends only (to test the harness itself before the module exists).
    if [ "$module" != none ]; then
        ln -s "$(readlink -f "$module")" "$work/backends/libvirt_storage_backend_zfs.so"
        # The zfs-slot module is a loader that loads the real backend from its own directory (as libvirt saw it:
        # ours), so the backend goes next to it. libvirt itself loads only the slot names it knows.
        for f in "$(dirname "$(readlink -f "$module")")"/libvirt_storage_backend_*.so; do
            case "$(basename "$f")" in libvirt_storage_backend_zfs.so) ;; *) ln -sfn "$f" "$work/backends/";; esac
        done
    fi
    for f in qemu storage secret; do ln -s "$stock_drivers/libvirt_driver_$f.so" "$work/drivers/"; done

    local -a cmd=("$libvirtd_bin")
    if [ -n "$strace_file" ]; then
        cmd=(strace -f -qq -e trace=open,openat,openat2 -o "$strace_file" "$libvirtd_bin")
    fi
    echo "--- start $(date -u +%T.%N)${strace_file:+ under strace -> $strace_file}" >>"$work/logs/libvirtd.log"
    spawn libvirtd env LIBVIRT_STORAGE_BACKEND_DIR="$work/backends" LIBVIRT_DRIVER_DIR="$work/drivers" \
        LIBVIRT_LOG_OUTPUTS="3:stderr" "${cmd[@]}"
    local pid=$spawned
    if [ -n "$strace_file" ]; then
        # Record strace (the parent of the traced daemon): stopping it detaches and ends the daemon too.
        remember libvirtd-strace "$pid" strace
        local i=0 child=
        while [ -z "$child" ] && [ $i -lt 100 ]; do
            child=$(pgrep -P "$pid" -x libvirtd || true); sleep 0.05; i=$((i + 1))
        done
        [ -n "$child" ] || die "libvirtd did not start under strace"
        remember libvirtd "$child" libvirtd
    else
        remember libvirtd "$pid" libvirtd
    fi
    wait_for "libvirtd" 60 libvirtd libvirtd_ready
    log "libvirtd pid $(pid_of libvirtd)${strace_file:+ (traced into $strace_file)}"
}

stop_libvirtd() {
    local dom
    if pid_of libvirtd >/dev/null; then
        # QEMU children would outlive libvirtd: end every domain through libvirt first.
        for dom in $(in_ns virsh -q -c qemu:///system list --name 2>/dev/null || true); do
            in_ns virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
        done
    fi
    stop_pid libvirtd
    stop_pid libvirtd-strace
}

up() {
    local m
    m=$(missing)
    [ -z "$m" ] || die "missing: $m"
    start_ns
    start_bus
    start_lvstord
    start_libvirtd
}

down() {
    pid_of ns >/dev/null || { stop_pid libvirtd; stop_pid lvstord; stop_pid bus; return 0; }
    stop_libvirtd
    stop_lvstord
    stop_bus
    stop_ns
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    up) up;;
    down) down;;
    start-ns) start_ns;;
    start-bus) start_bus;;
    start-lvstord) start_lvstord;;
    start-libvirtd) start_libvirtd "$@";;
    stop-lvstord) stop_lvstord "$@";;
    stop-libvirtd) stop_libvirtd;;
    stop-bus) stop_bus;;
    stop-ns) stop_ns;;
    virsh) in_ns virsh -c qemu:///system "$@";;
    exec) in_ns "$@";;
    pid) pid_of "${1:?pid NAME}";;
    missing) missing;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 64;;
esac
