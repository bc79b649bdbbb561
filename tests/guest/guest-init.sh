#!/bin/busybox sh
# /init of the test guest (busybox-static, no network, no root fs). build-guest.sh copies it in.
#
# The task comes from the kernel command line:
#   lvstor.task=boot            find the disk, report its size
#   lvstor.task=write-verify    check lvstor.expect regions, write lvstor.write regions (O_DIRECT + fsync),
#                               drop caches, read them back and compare
#   lvstor.task=verify          only check lvstor.expect regions (e.g. after a reboot or back-end restart)
#   lvstor.task=fio             (initrd-fio.img only) run fio jobs with verify=crc32c, see lvstor.fio
#   lvstor.task=resize          check lvstor.expect, print "lvstor: waiting for resize to BYTES", poll
#                               /sys/block/DEV/size until the disk has lvstor.newsize (within lvstor.resizewait
#                               seconds, default 60), then write-verify lvstor.write (which may lie past the old end);
#                               lvstor.resizeio=1 keeps O_DIRECT reads of [0,16M) and zero writes of [512M,528M) going
#                               until the new size shows
#   lvstor.dev=/dev/vda         the disk (default /dev/vda)
#   lvstor.size=BYTES           optional: the expected disk size (suffixes K M G)
#   lvstor.expect=SPEC,...      regions that must already hold a byte pattern
#   lvstor.write=SPEC,...       regions to fill with a byte pattern
#   lvstor.seq=MIB              optional: also time a sequential O_DIRECT write + read of MIB MiB
#                               at the end of the disk (the data there is then zeros)
#   lvstor.fio=JOB,...          fio jobs RW:BS:IODEPTH[:SIZE], default randwrite:4k:32:64M,write:1M:8:128M;
#                               each writes SIZE bytes (libaio, O_DIRECT) from lvstor.fiooff (default 0),
#                               then reads them back and checks crc32c (verify_fatal)
# SPEC = PATTERN@OFFSET+LENGTH, e.g. 0xab@1M+8M (PATTERN one byte in hex; OFFSET, LENGTH multiples of 4K).
#
# Output on the serial console, one machine-readable line at the end:
#   LVSTOR-RESULT ok task=... checks=N uptime=S
#   LVSTOR-RESULT fail task=... <reason>
# then the guest powers off (QEMU runs with -no-reboot, so a panic also ends it).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

up() { cut -d' ' -f1 /proc/uptime; }
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1"=*) echo "${a#*=}"; return;; esac; done; echo "$2"; }
say() { echo "lvstor: $*"; }
TASK=$(arg lvstor.task boot)
DEV=$(arg lvstor.dev /dev/vda)
CHECKS=0

finish() {  # finish ok|fail details...
    st=$1; shift
    sync
    echo "LVSTOR-RESULT $st task=$TASK $* uptime=$(up)"
    poweroff -f
    sleep 10
}
fail() { finish fail "$*"; }

for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || fail "insmod $m"; done

i=0
while [ ! -b "$DEV" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
[ -b "$DEV" ] || fail "no block device $DEV"
SIZE=$(blockdev --getsize64 "$DEV")
say "dev=$DEV size=$SIZE uptime=$(up)"

# bytes N[K|M|G] -> decimal
bytes() {
    case "$1" in
        *K) echo $(( ${1%K} * 1024 ));;
        *M) echo $(( ${1%M} * 1048576 ));;
        *G) echo $(( ${1%G} * 1073741824 ));;
        *)  echo $(( $1 ));;
    esac
}
# Parse SPEC into P (pattern byte, decimal), OFF, LEN (bytes) and BS (largest of 1M/64K/4K dividing both).
parse() {
    case "$1" in *@*+*) ;; *) fail "bad region '$1' (want PATTERN@OFFSET+LENGTH)";; esac
    P=$(( ${1%%@*} )); r=${1#*@}; OFF=$(bytes "${r%%+*}"); LEN=$(bytes "${r#*+}")
    [ "$P" -ge 0 ] && [ "$P" -le 255 ] || fail "bad pattern in '$1'"
    [ $((OFF % 4096)) = 0 ] && [ $((LEN % 4096)) = 0 ] && [ "$LEN" -gt 0 ] || fail "region '$1' not 4K aligned"
    [ $((OFF + LEN)) -le "$SIZE" ] || fail "region '$1' beyond end of disk ($SIZE)"
    for BS in 1048576 65536 4096; do [ $((OFF % BS)) = 0 ] && [ $((LEN % BS)) = 0 ] && break; done
}
# pattern byte P for LEN bytes on stdout
gen() { dd if=/dev/zero bs=$BS count=$((LEN / BS)) 2>/dev/null | tr '\000' "\\$(printf %o "$P")"; }
check() {  # check SPEC
    parse "$1"
    want=$(gen | md5sum | cut -d' ' -f1)
    got=$(dd if="$DEV" bs=$BS skip=$((OFF / BS)) count=$((LEN / BS)) iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then
        say "check $1 ok"; CHECKS=$((CHECKS + 1))
    else
        fail "check $1 mismatch md5=$got want=$want"
    fi
}
write() {  # write SPEC
    parse "$1"
    gen | dd of="$DEV" bs=$BS seek=$((OFF / BS)) oflag=direct conv=fsync 2>/dev/null || fail "write $1: dd error"
    say "wrote $1"
}
each() {  # each FUNC LIST
    f=$1; for s in $(echo "$2" | tr ',' ' '); do $f "$s"; done
}

want_size=$(arg lvstor.size "")
if [ -n "$want_size" ]; then
    [ "$(bytes "$want_size")" = "$SIZE" ] || fail "size $SIZE, expected $(bytes "$want_size")"
    CHECKS=$((CHECKS + 1))
fi

EXPECT=$(arg lvstor.expect "")
WRITE=$(arg lvstor.write "")
SEQ=$(arg lvstor.seq 0)
case "$TASK" in
    boot) ;;
    verify)
        each check "$EXPECT";;
    write-verify)
        [ -n "$WRITE" ] || fail "write-verify needs lvstor.write"
        each check "$EXPECT"
        t0=$(up)
        each write "$WRITE"
        sync; echo 3 > /proc/sys/vm/drop_caches
        each check "$WRITE"
        say "write+verify took $(echo "$(up) $t0" | awk '{printf "%.2f", $1 - $2}') s";;
    fio)
        command -v fio >/dev/null || fail "no fio in this initramfs (use initrd-fio.img)"
        for j in $(arg lvstor.fio randwrite:4k:32:64M,write:1M:8:128M | tr ',' ' '); do
            set -- $(echo "$j" | tr ':' ' ')
            [ $# -ge 3 ] || fail "bad fio job '$j' (want RW:BS:IODEPTH[:SIZE])"
            t0=$(up)
            say "fio $j start uptime=$t0"
            if fio --name="$1-$2-qd$3" --filename="$DEV" --rw="$1" --bs="$2" --iodepth="$3" \
                   --ioengine=libaio --direct=1 --size="${4:-64M}" --offset="$(arg lvstor.fiooff 0)" --verify=crc32c --do_verify=1 \
                   --verify_fatal=1 --randrepeat=0 --output=/tmp/fio.out >/dev/null 2>/tmp/fio.err; then
                iops=$(grep -o 'IOPS=[^,]*' /tmp/fio.out | tr '\n' ' ')
                say "fio $j ok ${iops}took $(echo "$(up) $t0" | awk '{printf "%.2f", $1 - $2}') s"
                CHECKS=$((CHECKS + 1))
            else
                cat /tmp/fio.out /tmp/fio.err
                fail "fio $j failed"
            fi
        done;;
    resize)
        [ -n "$WRITE" ] || fail "resize needs lvstor.write"
        RESIZE_TO=$(bytes "$(arg lvstor.newsize 0)")
        [ "$RESIZE_TO" -gt "$SIZE" ] || fail "resize needs lvstor.newsize above the current size $SIZE"
        each check "$EXPECT"
        t0=$(up)
        if [ "$(arg lvstor.resizeio 0)" = 1 ]; then
            # keep O_DIRECT reads and zero writes (over 512M+16M, which must stay zero) in flight during the resize
            rm -f /tmp/stopio; echo 0 > /tmp/iopasses
            ( n=0; while [ ! -e /tmp/stopio ]; do
                dd if="$DEV" of=/dev/null bs=64K count=256 iflag=direct 2>/dev/null || { echo fail > /tmp/iopasses; exit; }
                dd if=/dev/zero of="$DEV" bs=64K seek=8192 count=256 oflag=direct 2>/dev/null || { echo fail > /tmp/iopasses; exit; }
                n=$((n + 1)); echo $n > /tmp/iopasses
              done ) &
            iopid=$!
        fi
        say "waiting for resize to $RESIZE_TO"
        sysfs=/sys/block/${DEV#/dev/}/size
        limit=$(( $(arg lvstor.resizewait 60) * 10 ))
        i=0
        while [ $(( $(cat "$sysfs") * 512 )) != "$RESIZE_TO" ] && [ $i -lt $limit ]; do sleep 0.1; i=$((i+1)); done
        [ $(( $(cat "$sysfs") * 512 )) = "$RESIZE_TO" ] || fail "size still $(( $(cat "$sysfs") * 512 )), expected $RESIZE_TO"
        SIZE=$(blockdev --getsize64 "$DEV")
        [ "$SIZE" = "$RESIZE_TO" ] || fail "sysfs shows $RESIZE_TO but blockdev --getsize64 says $SIZE"
        say "resized to $SIZE after $(echo "$(up) $t0" | awk '{printf "%.2f", $1 - $2}') s"
        if [ -n "${iopid:-}" ]; then
            touch /tmp/stopio; wait "$iopid"
            [ "$(cat /tmp/iopasses)" != fail ] || fail "background I/O failed during the resize"
            say "background I/O: $(cat /tmp/iopasses) passes of 16 MiB read + 16 MiB written during the resize"
        fi
        CHECKS=$((CHECKS + 1))
        each write "$WRITE"
        sync; echo 3 > /proc/sys/vm/drop_caches
        each check "$WRITE"
        each check "$EXPECT";;
    *) fail "unknown task '$TASK'";;
esac

if [ "$SEQ" -gt 0 ]; then
    soff=$(( SIZE / 1048576 - SEQ ))
    [ "$soff" -ge 0 ] || fail "lvstor.seq=$SEQ MiB larger than the disk"
    t0=$(up)
    dd if=/dev/zero of="$DEV" bs=1M seek=$soff count="$SEQ" oflag=direct conv=fsync 2>/dev/null || fail "seq write"
    t1=$(up)
    dd if="$DEV" of=/dev/null bs=1M skip=$soff count="$SEQ" iflag=direct 2>/dev/null || fail "seq read"
    t2=$(up)
    say "seq $SEQ MiB: write $(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}') s, read $(echo "$t2 $t1" | awk '{printf "%.2f", $1 - $2}') s"
fi

finish ok "checks=$CHECKS"
