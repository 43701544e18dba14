#!/bin/bash
# Part 1 — probes answered after the first trap probe.
#
# A defender namespace (two open TCP services, 80 and 8080) and an attacker namespace,
# joined by a veth pair (198.18.1.1 / 198.18.1.2). From the attacker:
#   nmap -sS -Pn -n -T4 --max-retries 1 --top-ports 1000 198.18.1.1
# while tcpdump records the attacker's veth. Counted: what the defender sent back
# (SYN/ACK, RST) after the first probe to a trapped port (TCP 1-1023 minus 113, 139
# and the listening 80), and what nmap reported. Scenarios:
#   none  — no detector (reference)
#   ours  — target/release/portsentry -atcp -audp (kernel fast path, nftables)
#   pst12 — Debian's PortSentry 1.2 (/usr/sbin/portsentry -atcp) with
#           KILL_ROUTE="/sbin/iptables -I INPUT -s $TARGET$ -j DROP" (the defender
#           namespace's own iptables), run in a private mount namespace whose /etc is
#           an overlay on a tmpfs, so the host's /etc is never written.
# Each run uses fresh namespaces. Env: RUNS (default 7), SCENARIOS (default
# "none ours pst12"), BENCH_OUT (key=value results), BENCH_NO_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nmap tcpdump nft iptables unshare findmnt ss
RUNS=${RUNS:-7}
SCENARIOS=${SCENARIOS:-"none ours pst12"}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
DEF_IP=198.18.1.1
ATK_IP=198.18.1.2
TRAPPED="1-1023,!113,!139,!80"
NMAP_ARGS=(-sS -Pn -n -T4 --max-retries 1 --top-ports 1000)
# Once the attacker is banned every probe is dropped, and nmap's congestion control
# (its timing pings to ports that answered before the ban get no answer) can slow
# the rest of the scan to ~10 probes/s: 35 s to >180 s per run. --min-rate only sets
# a floor; in the first milliseconds, which decide what is answered, nmap sends far
# faster than that on a veth, so it changes the duration, not what is counted.
# NMAP_EXTRA= (empty) runs the plain command.
read -r -a NMAP_EXTRA_ARR <<<"${NMAP_EXTRA---min-rate 200}"
NMAP_ARGS+=("${NMAP_EXTRA_ARR[@]}")
MAX_FAILED=${MAX_FAILED:-3}

build_release
[ -x "$BIN" ] || die "no daemon binary at $BIN"
if [[ " $SCENARIOS " == *" pst12 "* ]] && [ ! -x /usr/sbin/portsentry ]; then
    bash "$BENCH_DIR/install-portsentry.sh"
fi

# The host's state we promise not to change (read only).
host_state() {
    {
        sha256sum /etc/portsentry/portsentry.conf 2>/dev/null || echo "no /etc/portsentry/portsentry.conf"
        if [ -e /etc/hosts.deny ]; then sha256sum /etc/hosts.deny; else echo "no /etc/hosts.deny"; fi
        findmnt -n -S psbench-etc || true
    } | sha256sum | cut -c1-16
}
HOST_BEFORE=$(host_state)

PORTS_12='TCP_PORTS="1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320"
UDP_PORTS="1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321"
ADVANCED_PORTS_TCP="1024"
ADVANCED_PORTS_UDP="1024"
ADVANCED_EXCLUDE_TCP="113,139"
ADVANCED_EXCLUDE_UDP="520,138,137,67"'

write_conf() { # DIR SCENARIO
    local d=$1 s=$2
    printf '127.0.0.1/32\n0.0.0.0\n' >"$d/portsentry.ignore"
    {
        echo "# portsentry bench ($s); every file in $d"
        echo "$PORTS_12"
        echo "IGNORE_FILE=\"$d/portsentry.ignore\""
        echo "HISTORY_FILE=\"$d/portsentry.history\""
        echo "BLOCKED_FILE=\"$d/portsentry.blocked\""
        echo 'RESOLVE_HOST="0"'
        echo 'BLOCK_TCP="1"'
        echo 'BLOCK_UDP="1"'
        echo 'SCAN_TRIGGER="0"'
        if [ "$s" = ours ]; then
            echo "HOSTS_DENY_FILE=\"$d/hosts.deny\""
            echo 'KILL_HOSTS_DENY="ALL: $TARGET$"'
        else
            # 1.2 writes its compiled-in /etc/hosts.deny: inside the overlay (tmpfs).
            echo 'KILL_HOSTS_DENY="ALL: $TARGET$ : DENY"'
            echo 'KILL_ROUTE="/sbin/iptables -I INPUT -s $TARGET$ -j DROP"'
        fi
    } >"$d/portsentry.conf"
    printf '[state]\nfile = "%s/state.json"\n' "$d" >"$d/portsentry.toml"
}

start_services() { # NS DIR
    local ns=$1 d=$2
    mkdir -p "$d/www"
    echo "bench" >"$d/www/index.html"
    ip netns exec "$ns" "$PY" -m http.server 80 --bind 0.0.0.0 --directory "$d/www" >/dev/null 2>&1 &
    ip netns exec "$ns" "$PY" -m http.server 8080 --bind 0.0.0.0 --directory "$d/www" >/dev/null 2>&1 &
    wait_until 15 sh -c "ip netns exec $ns ss -Hltn | grep -q '0.0.0.0:80 ' && ip netns exec $ns ss -Hltn | grep -q '0.0.0.0:8080 '" \
        || die "services did not start"
}

DETECTOR_PID=""

start_ours() { # NS DIR
    local ns=$1 d=$2
    ip netns exec "$ns" "$BIN" -atcp -audp -c "$d/portsentry.conf" --foreground --no-syslog \
        --settings "$d/portsentry.toml" >"$d/daemon.log" 2>&1 &
    DETECTOR_PID=$!
    wait_until 20 grep -q "PortSentry is now active and listening" "$d/daemon.log" \
        || { cat "$d/daemon.log" >&2; die "our daemon did not become ready"; }
    wait_until 10 sh -c "ip netns exec $ns nft list chain inet portsentry input | grep -q 'add @banned4'" \
        || { cat "$d/daemon.log" >&2; die "our nftables traps are not in place"; }
}

start_pst12() { # NS DIR
    local ns=$1 d=$2 p i
    mkdir -p "$d/ovl"
    # Private mount namespace inside the defender's network namespace; /etc becomes an
    # overlay (lower: the real /etc, read only; upper: a tmpfs of this namespace) with
    # our portsentry.conf at the compiled-in path /etc/portsentry/portsentry.conf.
    ip netns exec "$ns" unshare -m --propagation private /bin/sh -ec '
        d=$1
        mount -t tmpfs -o size=8m,mode=0755 psbench-etc "$d/ovl"
        mkdir -p "$d/ovl/up/portsentry" "$d/ovl/work"
        cp "$d/portsentry.conf" "$d/ovl/up/portsentry/portsentry.conf"
        mount -t overlay psbench-etc -o "lowerdir=/etc,upperdir=$d/ovl/up,workdir=$d/ovl/work" /etc
        findmnt -n -o TARGET,SOURCE,FSTYPE,PROPAGATION /etc >"$d/findmnt-inside.txt"
        cmp -s /etc/portsentry/portsentry.conf "$d/portsentry.conf"
        exec /usr/sbin/portsentry -atcp' sh "$d" >"$d/pst12.out" 2>&1 \
        || { cat "$d/pst12.out" >&2; die "PortSentry 1.2 did not start"; }
    # It daemonized: find it among the processes of the defender namespace.
    DETECTOR_PID=""
    for i in $(seq 1 100); do
        for p in $(ip netns pids "$ns"); do
            [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/portsentry ] && DETECTOR_PID=$p
        done
        [ -n "$DETECTOR_PID" ] && break
        sleep 0.05
    done
    [ -n "$DETECTOR_PID" ] || die "PortSentry 1.2 process not found in $ns"
    # Its raw TCP socket is open: it sees probes from now on.
    wait_until 10 sh -c "ip netns exec $ns ss -Hwan | grep -q ." || die "PortSentry 1.2 has no raw socket"
    sleep 0.5
    # The overlay is private to its mount namespace: not visible here (root).
    grep -q "overlay.*private" "$d/findmnt-inside.txt" || die "overlay on /etc not private: $(cat "$d/findmnt-inside.txt")"
    [ -z "$(findmnt -n -S psbench-etc)" ] || die "bench mount leaked into the root mount namespace"
}

stop_pid() { # PID (ours, by pid): TERM, up to 5 s, KILL
    local p=$1 i
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

one_run() { # SCENARIO RUN
    local s=$1 r=$2 d def atk tpid stats banned evidence
    d="$BENCH_TMP/probes-$s-$r"
    mkdir -p "$d"
    def=$(ns_create "def$r")
    atk=$(ns_create "atk$r")
    link_pair "$def" d0 "$DEF_IP/24" "$atk" a0 "$ATK_IP/24"
    write_conf "$d" "$s"
    start_services "$def" "$d"
    DETECTOR_PID=""
    case $s in
    ours) start_ours "$def" "$d" ;;
    pst12) start_pst12 "$def" "$d" ;;
    none) ;;
    esac
    ip netns exec "$atk" tcpdump -i a0 -n -U --immediate-mode -B 16384 -s 128 -w "$d/scan.pcap" tcp >"$d/tcpdump.log" 2>&1 &
    tpid=$!
    wait_until 10 grep -q "listening on" "$d/tcpdump.log" || die "tcpdump did not start"
    local nmap_rc=0
    timeout 180 ip netns exec "$atk" nmap "${NMAP_ARGS[@]}" -oX "$d/nmap.xml" "$DEF_IP" >"$d/nmap.txt" 2>&1 \
        || nmap_rc=$?
    sleep 1
    stop_pid_int() { kill -INT "$tpid" 2>/dev/null || true; local i; for i in $(seq 1 50); do kill -0 "$tpid" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$tpid" 2>/dev/null || true; }
    stop_pid_int
    wait "$tpid" 2>/dev/null || true
    # Evidence that the detector blocked the attacker (in the defender namespace).
    banned=no
    case $s in
    ours)
        ip netns exec "$def" nft list set inet portsentry banned4 2>/dev/null | grep -q "$ATK_IP" && banned=yes
        evidence=$(grep -c "attackalert" "$d/daemon.log" || true)
        ;;
    pst12)
        ip netns exec "$def" iptables -S INPUT | grep -q -- "-s $ATK_IP/32 -j DROP" && banned=yes
        cp "/proc/$DETECTOR_PID/root/etc/hosts.deny" "$d/hosts.deny.in-overlay" 2>/dev/null || true
        evidence=$(wc -l <"$d/portsentry.history" 2>/dev/null || echo 0)
        ;;
    none) evidence=0 ;;
    esac
    stop_pid "$DETECTOR_PID"
    stats=$("$PY" "$BENCH_DIR/pcap_stats.py" "$d/scan.pcap" "$d/nmap.xml" "$ATK_IP" "$DEF_IP" "$TRAPPED")
    local drops
    local cap rcv
    drops=$(sed -n 's/^\([0-9]*\) packets* dropped by kernel.*/\1/p' "$d/tcpdump.log")
    cap=$(sed -n 's/^\([0-9]*\) packets* captured.*/\1/p' "$d/tcpdump.log")
    rcv=$(sed -n 's/^\([0-9]*\) packets* received by filter.*/\1/p' "$d/tcpdump.log")
    if [ "$nmap_rc" != 0 ]; then
        log "nmap failed (exit $nmap_rc; 124 = timed out after 180 s) in run $s/$r; run discarded: $stats"
        tail -3 "$d/nmap.txt" >&2
        ns_delete "$def"
        ns_delete "$atk"
        return 1
    fi
    echo "scenario=$s run=$r $stats banned=$banned evidence_lines=$evidence tcpdump_captured=${cap:-?} tcpdump_received=${rcv:-?} tcpdump_dropped=${drops:-?}" | tee -a "$BENCH_TMP/probes.raw" >&2
    ns_delete "$def"
    ns_delete "$atk"
}

for s in $SCENARIOS; do
    failed=0
    r=1
    while [ "$r" -le "$RUNS" ]; do
        if one_run "$s" "$r"; then
            r=$((r + 1))
        else
            failed=$((failed + 1))
            result "probes.$s.discarded_runs" "$failed"
            [ "$failed" -lt "$MAX_FAILED" ] || die "$s: $failed runs failed"
        fi
    done
done

field() { # SCENARIO KEY → values, one per line
    grep "^scenario=$1 " "$BENCH_TMP/probes.raw" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

echo
echo "Part 1: probes answered after the first trap probe (median of $RUNS runs; nmap ${NMAP_ARGS[*]})"
printf '%-8s %12s %8s %6s %10s %10s %10s %10s %10s %9s %7s\n' \
    scenario replies_after synack rst window_ms nmap_open nmap_closed nmap_filt probes_pre nmap_secs banned
for s in $SCENARIOS; do
    ra=$(field "$s" replies_after_trap | median)
    sa=$(field "$s" synack_after | median)
    rs=$(field "$s" rst_after | median)
    wm=$(field "$s" window_ms | median)
    no=$(field "$s" nmap_open | median)
    nc=$(field "$s" nmap_closed | median)
    nf=$(field "$s" nmap_filtered | median)
    pb=$(field "$s" probes_before_trap | median)
    ns=$(field "$s" nmap_secs | median)
    bn="$(field "$s" banned | grep -c yes || true)/$RUNS"
    printf '%-8s %12s %8s %6s %10s %10s %10s %10s %10s %9s %7s\n' "$s" "$ra" "$sa" "$rs" "$wm" "$no" "$nc" "$nf" "$pb" "$ns" "$bn"
    result "probes.$s.replies_after" "$ra"
    result "probes.$s.synack_after" "$sa"
    result "probes.$s.rst_after" "$rs"
    result "probes.$s.window_ms" "$wm"
    result "probes.$s.nmap_open" "$no"
    result "probes.$s.nmap_closed" "$nc"
    result "probes.$s.nmap_filtered" "$nf"
    result "probes.$s.probes_before_trap" "$pb"
    result "probes.$s.nmap_secs" "$ns"
    result "probes.$s.banned" "$bn"
    result "probes.$s.replies_after_all" "$(field "$s" replies_after_trap | tr '\n' ' ')"
done
echo "(per-run lines above on stderr; replies_after = SYN/ACK + RST the defender sent after the first probe to a trapped port; window_ms = from that probe to the last such reply)"

[ "$HOST_BEFORE" = "$(host_state)" ] || die "host /etc state changed during the run!"
log "host /etc untouched (portsentry.conf, hosts.deny, no bench mounts in the root mount namespace)"
