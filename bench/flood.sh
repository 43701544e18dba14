#!/bin/bash
# Part 8: a forged-source SYN flood against the trap ports, then a real scan.
#   sudo bench/flood.sh                  (from the repository root)
# For each scenario (ours, pst12 = Debian's PortSentry 1.2 -atcp) and run: a defender
# with an unchanged 1.2-style config (BLOCK_TCP=1, SCAN_TRIGGER=0, KILL_ROUTE = an
# iptables DROP through a script that also counts its runs, KILL_HOSTS_DENY), a flooder
# sending RATE TCP SYNs/s for SECS seconds from forged sources in 198.19.128.0/17 to
# trap ports 1-1023, a benign client connecting to an open service every 20 ms, and
# right after the flood a scanner (nmap -sS --top-ports 100). Printed per run: bans
# made among the forged sources, KILL_ROUTE runs, log lines during the flood, the
# daemon's CPU seconds during the flood (its own and its children's), peak RSS, the
# client's success rate, and ms from the scanner's start to its first alert line.
# Environment: RUNS (default 3), RATE (50000), SECS (10), SCENARIOS ("ours pst12"),
# BENCH_OUT, BENCH_NO_BUILD=1.
# Network safety (shared/design/TESTING.md): the forged sources come from our own sender
# (crates/kernel/examples/flood.rs), which refuses any source outside 198.18.0.0/15;
# every packet stays on veth pairs between the namespaces made here, none of which has a
# default route; the defender's firewall changes happen inside its namespace only.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nmap nft iptables unshare python3
RUNS=${RUNS:-3}
RATE=${RATE:-50000}
SECS=${SECS:-10}
SCENARIOS=${SCENARIOS:-"ours pst12"}
FORGED=198.19.128.0/17
DEF_F=198.18.6.1 FLD=198.18.6.2
DEF_C=198.18.7.1 CLI=198.18.7.2
DEF_S=198.18.8.1 SCN=198.18.8.2
PY=python3

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "building (release) into $TARGET"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p portsentry --bin portsentry \
        && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p portsentry-kernel --features testns \
            --example flood) || die "cargo build failed"
fi
FLOOD=$EXAMPLES/flood
[ -x "$FLOOD" ] || die "no $FLOOD (cargo build --release -p portsentry-kernel --features testns --example flood)"
if [[ " $SCENARIOS " == *" pst12 "* ]] && [ ! -x /usr/sbin/portsentry ]; then
    bash "$BENCH_DIR/install-portsentry.sh" >&2 || die "could not install Debian's portsentry"
fi

write_conf() { # DIR SCENARIO
    local d=$1 s=$2
    printf '127.0.0.1/32\n0.0.0.0\n' >"$d/portsentry.ignore"
    # The KILL_ROUTE script: one line per run, then the usual iptables DROP.
    printf '#!/bin/sh\necho "$1" >>%s/killroute.count\nexec /sbin/iptables -I INPUT -s "$1" -j DROP\n' "$d" \
        >"$d/killroute.sh"
    : >"$d/killroute.count"
    {
        echo "# portsentry flood bench ($s); every file in $d"
        conf_12_keys "$d"
        echo "KILL_ROUTE=\"/bin/sh $d/killroute.sh \$TARGET\$\""
        if [ "$s" = ours ]; then
            echo "HOSTS_DENY_FILE=\"$d/hosts.deny\""
            echo 'KILL_HOSTS_DENY="ALL: $TARGET$"'
        else
            echo 'KILL_HOSTS_DENY="ALL: $TARGET$ : DENY"'
        fi
    } >"$d/portsentry.conf"
    printf '[state]\nfile = "%s/state.json"\n' "$d" >"$d/portsentry.toml"
}

DETECTOR_PID=""

start_ours() { # NS DIR
    local ns=$1 d=$2
    ip netns exec "$ns" "$BIN" -atcp -c "$d/portsentry.conf" --foreground --no-syslog \
        --settings "$d/portsentry.toml" >"$d/daemon.log" 2>&1 &
    DETECTOR_PID=$!
    wait_until 20 grep -q "PortSentry is now active and listening" "$d/daemon.log" \
        || { cat "$d/daemon.log" >&2; die "our daemon did not become ready"; }
}

start_pst12() { # NS DIR (as in probes.sh: /etc is a private overlay in its own mount namespace)
    local ns=$1 d=$2 p i
    mkdir -p "$d/ovl"
    ip netns exec "$ns" unshare -m --propagation private /bin/sh -ec '
        d=$1
        mount -t tmpfs -o size=8m,mode=0755 psbench-etc "$d/ovl"
        mkdir -p "$d/ovl/up/portsentry" "$d/ovl/work"
        cp "$d/portsentry.conf" "$d/ovl/up/portsentry/portsentry.conf"
        mount -t overlay psbench-etc -o "lowerdir=/etc,upperdir=$d/ovl/up,workdir=$d/ovl/work" /etc
        cmp -s /etc/portsentry/portsentry.conf "$d/portsentry.conf"
        exec /usr/sbin/portsentry -atcp' sh "$d" >"$d/pst12.out" 2>&1 \
        || { cat "$d/pst12.out" >&2; die "PortSentry 1.2 did not start"; }
    DETECTOR_PID=""
    for i in $(seq 1 100); do
        for p in $(ip netns pids "$ns"); do
            [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/portsentry ] && DETECTOR_PID=$p
        done
        [ -n "$DETECTOR_PID" ] && break
        sleep 0.05
    done
    [ -n "$DETECTOR_PID" ] || die "PortSentry 1.2 process not found in $ns"
    wait_until 10 sh -c "ip netns exec $ns ss -Hwan | grep -q ." || die "PortSentry 1.2 has no raw socket"
    sleep 0.5
    [ -z "$(findmnt -n -S psbench-etc)" ] || die "bench mount leaked into the root mount namespace"
}

# CPU seconds of PID: "own children" (utime+stime, cutime+cstime).
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); split($0, f, " ");
        printf "%.2f %.2f\n", (f[12]+f[13])/hz, (f[14]+f[15])/hz }' "/proc/$1/stat" 2>/dev/null || echo "0 0"
}

# Lines of the detector's log (ours: its output; pst12: syslog is not reachable
# from the namespace, so its history file stands in).
log_lines() { # SCENARIO DIR
    case $1 in
    ours) wc -l <"$2/daemon.log" ;;
    pst12) wc -l <"$2/portsentry.history" 2>/dev/null || echo 0 ;;
    esac
}

one_run() { # SCENARIO RUN
    local s=$1 r=$2 d def fld cli scn
    d="$BENCH_TMP/flood-$s-$r"
    mkdir -p "$d"
    def=$(ns_create "def$r")
    fld=$(ns_create "fld$r")
    cli=$(ns_create "cli$r")
    scn=$(ns_create "scn$r")
    link_pair "$def" f0 "$DEF_F/24" "$fld" f1 "$FLD/24"
    link_pair "$def" c0 "$DEF_C/24" "$cli" c1 "$CLI/24"
    link_pair "$def" s0 "$DEF_S/24" "$scn" s1 "$SCN/24"
    for k in all default f0; do ip netns exec "$def" sysctl -qw "net.ipv4.conf.$k.rp_filter=0"; done
    mkdir -p "$d/www" && echo bench >"$d/www/index.html"
    ip netns exec "$def" "$PY" -m http.server 8080 --bind 0.0.0.0 --directory "$d/www" >/dev/null 2>&1 &
    wait_until 15 sh -c "ip netns exec $def ss -Hltn | grep -q '0.0.0.0:8080 '" || die "service did not start"
    write_conf "$d" "$s"
    case $s in
    ours) start_ours "$def" "$d" ;;
    pst12) start_pst12 "$def" "$d" ;;
    esac
    local pid=$DETECTOR_PID lines0 cpu0 cpu1
    lines0=$(log_lines "$s" "$d")
    cpu0=$(cpu_of "$pid")
    # The benign client: one connection every 20 ms, for the flood and a little after.
    ip netns exec "$cli" "$PY" - "$DEF_C" "$SECS" >"$d/client.txt" 2>&1 <<'EOF' &
import socket, sys, time
host, secs = sys.argv[1], float(sys.argv[2])
ok = tried = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    tried += 1
    try:
        socket.create_connection((host, 8080), timeout=2).close()
        ok += 1
    except OSError:
        pass
    time.sleep(0.02)
print(f"client ok={ok} tried={tried}")
EOF
    local cpid=$!
    ip netns exec "$fld" "$FLOOD" "$DEF_F" "$FORGED" "$RATE" "$SECS" 1-1023 >"$d/flood.txt"
    cpu1=$(cpu_of "$pid")
    wait "$cpid" || true
    local lines1 t0 alert_ms
    lines1=$(log_lines "$s" "$d")
    # The scanner right after the flood.
    t0=$(date +%s%N)
    timeout 120 ip netns exec "$scn" nmap -n -Pn -sS -T4 --max-retries 1 --top-ports 100 "$DEF_S" >"$d/nmap.txt" 2>&1 || true
    alert_ms=-
    case $s in
    ours)
        if wait_until 10 grep -q "from host: $SCN/$SCN" "$d/daemon.log"; then
            local ts
            ts=$(grep -m1 "from host: $SCN/$SCN" "$d/daemon.log" | cut -d' ' -f1)
            alert_ms=$(( ($(date -d "$ts" +%s%N) - t0) / 1000000 ))
        fi
        ;;
    pst12)
        if wait_until 10 grep -q "$SCN" "$d/portsentry.history"; then
            local ep
            ep=$(grep -m1 "$SCN" "$d/portsentry.history" | cut -d' ' -f1)
            alert_ms=$(( ep * 1000 - t0 / 1000000 ))
            [ "$alert_ms" -lt 0 ] && alert_ms="<1000"
        fi
        ;;
    esac
    local bans killruns rss client sent
    case $s in
    ours) bans=$(ip netns exec "$def" nft -j list set inet portsentry banned4 | "$PY" -c '
import ipaddress, json, sys
net = ipaddress.ip_network(sys.argv[1])
els = [s["set"].get("elem", []) for s in json.load(sys.stdin)["nftables"] if "set" in s][0]
val = lambda e: e["elem"]["val"] if isinstance(e, dict) else e
print(sum(1 for e in els if ipaddress.ip_address(val(e)) in net))' "$FORGED") ;;
    pst12) bans=$(ip netns exec "$def" iptables -S INPUT | grep -c -- "-s 198.19" || true) ;;
    esac
    killruns=$(wc -l <"$d/killroute.count")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo -)
    client=$(sed -n 's/^client //p' "$d/client.txt")
    sent=$(cat "$d/flood.txt")
    local t_stop0 t_stop
    t_stop0=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    t_stop=$(( ($(date +%s%N) - t_stop0) / 1000000 ))
    kill -KILL "$pid" 2>/dev/null || true
    printf '%-6s %3s %9s %6s %8s %10s %13s %13s %9s %-22s %8s %7s  %s\n' "$s" "$r" \
        "$(echo "$sent" | sed -n 's/.*sent=\([0-9]*\).*/\1/p')" "$bans" "$killruns" "$((lines1 - lines0))" \
        "$(awk -v a="${cpu0% *}" -v b="${cpu1% *}" 'BEGIN{printf "%.2f", b-a}')" \
        "$(awk -v a="${cpu0#* }" -v b="${cpu1#* }" 'BEGIN{printf "%.2f", b-a}')" \
        "$rss" "$client" "$alert_ms" "$t_stop" "$(grep -c . "$d/nmap.txt" >/dev/null && grep -o '[0-9]* open' "$d/nmap.txt" | head -1 || echo '-')"
    result "flood.$s.$r.bans" "$bans"
    result "flood.$s.$r.alert_ms" "$alert_ms"
    for n in "$def" "$fld" "$cli" "$scn"; do ns_delete "$n"; done
}

echo "Part 8: forged SYN flood ($RATE packets/s for $SECS s from $FORGED to ports 1-1023), then nmap -sS --top-ports 100"
printf '%-6s %3s %9s %6s %8s %10s %13s %13s %9s %-22s %8s %7s  %s\n' scen run sent bans killruns log_lines \
    cpu_daemon_s cpu_children_s rss_kib client alert_ms stop_ms nmap_open
for r in $(seq 1 "$RUNS"); do
    for s in $SCENARIOS; do one_run "$s" "$r"; done
done
