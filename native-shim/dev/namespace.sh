#!/bin/bash
# Hand-testing of the module: starts a private system bus, lvstord and libvirtd (with the module from
# native-shim/build as its zfs storage backend) inside a private mount and network namespace, so nothing
# touches the host's /run, /etc/libvirt or /var/lib/libvirt. Needs root, libvirt-daemon-system, dbus-daemon.
# LVSTOR_SHIM_CHAIN_ZFS=/path/to/genuine/zfs.so in the environment is passed on to libvirtd.
#
#   native-shim/dev/namespace.sh start WORK LVSTORD   # WORK: scratch dir; LVSTORD: the lvstord executable
#   native-shim/dev/namespace.sh virsh WORK ARGS...   # virsh -c qemu:///system ARGS inside the namespace
#   native-shim/dev/namespace.sh exec WORK CMD...     # any command inside the namespace
#   native-shim/dev/namespace.sh lvstord WORK LVSTORD # (re)start lvstord alone, after `kill $(cat WORK/run/lvstord.pid)`
#   native-shim/dev/namespace.sh libvirtd WORK        # restart libvirtd alone (reloads the module)
#   native-shim/dev/namespace.sh stop WORK            # stops what start started (by its pid files)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cmd=$1 work=$(realpath -m "$2"); shift 2

holder_pid() { cat "$work/run/holder.pid"; }
in_ns() { nsenter -t "$(holder_pid)" -m -n "$@"; }

start_libvirtd() {
    nsenter -t "$(holder_pid)" -m -n env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket \
        LIBVIRT_STORAGE_BACKEND_DIR="$work/backends" LIBVIRT_DRIVER_DIR="$work/drivers" \
        ${LVSTOR_SHIM_CHAIN_ZFS:+LVSTOR_SHIM_CHAIN_ZFS="$LVSTOR_SHIM_CHAIN_ZFS"} \
        LIBVIRT_LOG_OUTPUTS="1:file:$work/run/libvirtd.log" \
        LIBVIRT_LOG_FILTERS="1:storage 1:util.module 3:*" \
        libvirtd -p "$work/run/libvirtd.pid" </dev/null >"$work/run/libvirtd.out" 2>&1 &
    for _ in $(seq 100); do in_ns test -S /run/libvirt/libvirt-sock && break; sleep 0.1; done
    in_ns test -S /run/libvirt/libvirt-sock || { echo "libvirtd did not start: $work/run/libvirtd.out" >&2; exit 1; }
}

case $cmd in
start)
    lvstord=$(realpath "$1")
    mkdir -p "$work/run" "$work/backends" "$work/drivers" "$work/etc" "$work/pools" "$work/state"
    stock=/usr/lib/x86_64-linux-gnu/libvirt
    rm -f "$work"/backends/* "$work"/drivers/*
    for m in "$stock"/storage-backend/*.so; do ln -s "$m" "$work/backends/"; done
    rm -f "$work/backends/libvirt_storage_backend_zfs.so"
    ln -s "$here/build/libvirt_storage_backend_zfs.so" "$work/backends/libvirt_storage_backend_zfs.so"
    for d in qemu storage secret; do ln -s "$stock/connection-driver/libvirt_driver_$d.so" "$work/drivers/"; done
    cat > "$work/etc/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow send_type="*"/><allow receive_type="*"/></policy>
</busconfig>
CONF
    # The holder keeps the namespace alive; everything else is entered with nsenter.
    setsid unshare --mount --net --propagation private --fork bash -c '
        set -e
        work=$1
        mount -t tmpfs tmpfs /run
        for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
        rm -rf $work/etc/libvirt; cp -a /etc/libvirt $work/etc/libvirt
        rm -rf $work/etc/libvirt/storage $work/etc/libvirt/qemu/*.xml $work/etc/libvirt/qemu/autostart
        mkdir -p $work/etc/libvirt/storage
        printf "auth_unix_rw = \"none\"\nunix_sock_rw_perms = \"0700\"\n" >> $work/etc/libvirt/libvirtd.conf
        printf "stdio_handler = \"file\"\nuser = \"root\"\ngroup = \"root\"\n" >> $work/etc/libvirt/qemu.conf
        mount --bind $work/etc/libvirt /etc/libvirt
        ip link set lo up 2>/dev/null || true
        mkdir -p /run/dbus
        echo $$ > $work/run/holder.pid
        exec sleep infinity
    ' holder "$work" </dev/null >"$work/run/holder.log" 2>&1 &
    for _ in $(seq 50); do [ -s "$work/run/holder.pid" ] && break; sleep 0.1; done
    sleep 0.5
    in_ns dbus-daemon --config-file="$work/etc/bus.conf" --fork --print-pid > "$work/run/dbus.pid"
    nsenter -t "$(holder_pid)" -m -n env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket \
        "$lvstord" --bus unix:path=/run/dbus/system_bus_socket --state-dir "$work/state" \
        --runtime-dir /run/lvstor </dev/null >"$work/run/lvstord.log" 2>&1 &
    echo $! > "$work/run/lvstord.pid"
    start_libvirtd
    echo "namespace up: holder $(holder_pid), libvirtd $(cat "$work/run/libvirtd.pid"), lvstord $(cat "$work/run/lvstord.pid")"
    ;;
lvstord)   # restart lvstord alone: lvstord WORK LVSTORD
    lvstord=$(realpath "$1")
    nsenter -t "$(holder_pid)" -m -n env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket \
        "$lvstord" --bus unix:path=/run/dbus/system_bus_socket --state-dir "$work/state" \
        --runtime-dir /run/lvstor </dev/null >>"$work/run/lvstord.log" 2>&1 &
    echo $! > "$work/run/lvstord.pid"
    ;;
libvirtd)  # restart libvirtd alone (the module is reloaded)
    kill "$(cat "$work/run/libvirtd.pid")"
    for _ in $(seq 100); do in_ns test -S /run/libvirt/libvirt-sock || break; sleep 0.1; done
    sleep 0.5
    start_libvirtd
    ;;
virsh) in_ns virsh -c qemu:///system "$@" ;;
exec) in_ns "$@" ;;
stop)
    for p in libvirtd lvstord dbus holder; do
        f=$work/run/$p.pid
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    ;;
*) echo "usage: $0 start|virsh|exec|stop WORK ..." >&2; exit 2 ;;
esac
