#!/bin/bash
# Run a guest test command N times and count the outcomes by exit status (0 ok, 1 fail, 2 hang).
#
#   soak.sh N COMMAND [ARGS...]          e.g.  soak.sh 5 tests/guest/qsd-smoke.sh
#
# One line per run (wall time, the guest's own run-guest line, the host load), then a summary line
#   soak: runs=N ok=A fail=B hang=C
# Logs of runs that did not pass are kept in $LVSTOR_SOAK_LOGS (default: a folder it prints).
# Exit status: 0 if every run passed, 1 otherwise.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 N COMMAND [ARGS...]" >&2; exit 1; }
n=$1
shift
logs=${LVSTOR_SOAK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/lvstor-soak.XXXXXX")}
mkdir -p "$logs"

ok=0 fail=0 hang=0
for i in $(seq 1 "$n"); do
    log=$logs/run$i.log
    t0=$(date +%s.%N)
    rc=0
    "$@" >"$log" 2>&1 || rc=$?
    wall=$(echo "$t0 $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
    case $rc in
        0) ok=$((ok + 1)); what=ok;;
        2) hang=$((hang + 1)); what=HANG;;
        *) fail=$((fail + 1)); what="FAIL($rc)";;
    esac
    guest=$(grep -a '^run-guest: ' "$log" | tail -1 || true)
    up=$(grep -a '^LVSTOR-RESULT ' "$log" | grep -o 'uptime=[0-9.]*' | tail -1 || true)
    # our back-end logs what the front-end acknowledged: the soak is meant to run with EVENT_IDX on
    evidx=$(grep -ao 'event_idx [A-Za-z]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    echo "soak: run $i/$n $what wall=${wall}s [${guest#run-guest: }] guest-$up event_idx=${evidx:-unknown} load=$(cut -d' ' -f1 /proc/loadavg)"
    [ "$rc" = 0 ] && rm -f "$log"
done
echo "soak: runs=$n ok=$ok fail=$fail hang=$hang"
[ $((fail + hang)) = 0 ] && rmdir "$logs" 2>/dev/null || echo "soak: logs of failed runs in $logs"
[ $((fail + hang)) = 0 ]
