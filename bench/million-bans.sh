#!/bin/bash
# Part 7: start and stop with a million bans in the kernel (issue 7 item 7).
#   sudo bench/million-bans.sh           (from the repository root)
# A defender namespace; a first run of the daemon creates table inet portsentry and
# stops (the sets stay); NBANS IPv6 elements (fd00:5e17::1:X:Y) are put into banned6
# with `nft -f` (batched `add element` lines, no packets); then RUNS times: start the
# daemon and time (a) until the trap rules are in the kernel (the daemon's "trapped in
# the kernel" line, after the table was applied and verified), (b) until "PortSentry is now active and listening.",
# read its peak RSS (VmHWM), then SIGTERM and time until it exited. Medians printed.
# Environment: NBANS (default 1000000), RUNS (3), BENCH_NO_BUILD=1, BENCH_OUT.
# Network safety (shared/design/TESTING.md): no traffic at all; the elements are
# addresses of fd00:5e17::/64 written into the set of a namespace made here.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nft python3
NBANS=${NBANS:-1000000}
RUNS=${RUNS:-3}
build_release
[ -x "$BIN" ] || die "no $BIN"

DEF=$(ns_create def)
D=$BENCH_TMP/def
mkdir -p "$D"
printf '127.0.0.1/32\n::1\n' >"$D/portsentry.ignore"
{
    echo 'ADVANCED_PORTS_TCP="1024"'
    echo 'ADVANCED_PORTS_UDP="1024"'
    echo "IGNORE_FILE=\"$D/portsentry.ignore\""
    echo "HISTORY_FILE=\"$D/portsentry.history\""
    echo "BLOCKED_FILE=\"$D/portsentry.blocked\""
    echo "HOSTS_DENY_FILE=\"$D/hosts.deny\""
    echo 'BLOCK_TCP="1"'
    echo 'BLOCK_UDP="1"'
    echo 'SCAN_TRIGGER="0"'
} >"$D/portsentry.conf"
printf '[state]\nfile = "%s/state.json"\n[control]\nsocket = "%s/portsentry.sock"\n' "$D" "$D" \
    >"$D/portsentry.toml"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }

run_daemon() { # LOG: starts the daemon in the background (a child of this shell), sets $pid
    ip netns exec "$DEF" "$BIN" -atcp -audp -c "$D/portsentry.conf" --foreground --no-syslog \
        --settings "$D/portsentry.toml" >"$1" 2>&1 &
    pid=$!
}

run_daemon "$D/first.log"
wait_until 20 grep -q "now active" "$D/first.log" || die "first run did not start: $(cat "$D/first.log")"
kill -TERM "$pid"; wait "$pid" || true
log "filling banned6 with $NBANS elements (nft -f)"
python3 - "$NBANS" >"$D/fill.nft" <<'PY'
import sys
n = int(sys.argv[1]); i = 0
while i < n:
    k = min(10000, n - i)
    items = ", ".join("fd00:5e17::1:%x:%x" % (j >> 16, j & 0xffff) for j in range(i, i + k))
    print("add element inet portsentry banned6 { %s }" % items)
    i += k
PY
t0=$(now); ip netns exec "$DEF" nft -f "$D/fill.nft"; t1=$(now)
log "filled in $(secs "$t0" "$t1") s"

: >"$D/armed" ; : >"$D/active"; : >"$D/stop"; : >"$D/hwm"
for r in $(seq 1 "$RUNS"); do
    t0=$(now)
    run_daemon "$D/run$r.log"
    for _ in $(seq 1 6000); do
        grep -q "now active" "$D/run$r.log" && break
        kill -0 "$pid" 2>/dev/null || die "daemon exited: $(cat "$D/run$r.log")"
        sleep 0.02
    done
    t1=$(now)
    # Traps armed: the daemon's "... trapped in the kernel" line (written once the table
    # is applied and verified), timed from its "is starting" line. (Polling with
    # `nft list chain` is no use here: with a million elements it takes minutes.)
    armed=$(python3 - "$D/run$r.log" <<'PY'
import sys, datetime
t = lambda l: datetime.datetime.fromisoformat(l.split(" ")[0]).timestamp()
lines = open(sys.argv[1]).read().splitlines()
s = next(t(l) for l in lines if "is starting" in l)
a = next(t(l) for l in lines if "trapped in the kernel" in l)
print(f"{a - s:.3f}")
PY
)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    grep -q "nftables not available" "$D/run$r.log" && die "fell back from nftables"
    sleep 1
    t2=$(now); kill -TERM "$pid"; wait "$pid" || true; t3=$(now)
    echo "$armed" >>"$D/armed"; secs "$t0" "$t1" >>"$D/active"; secs "$t2" "$t3" >>"$D/stop"
    echo $((hwm / 1024)) >>"$D/hwm"
    log "run $r: traps armed $(tail -1 "$D/armed") s, active $(tail -1 "$D/active") s, peak RSS $(tail -1 "$D/hwm") MiB, stop $(tail -1 "$D/stop") s"
done
echo "million bans ($NBANS in banned6), median of $RUNS runs:"
echo "  traps armed after start: $(median <"$D/armed") s"
echo "  active after start:      $(median <"$D/active") s"
echo "  peak RSS:                $(median <"$D/hwm") MiB"
echo "  stop (SIGTERM to exit):  $(median <"$D/stop") s"
result million_armed_s "$(median <"$D/armed")"
result million_active_s "$(median <"$D/active")"
result million_rss_mib "$(median <"$D/hwm")"
result million_stop_s "$(median <"$D/stop")"
