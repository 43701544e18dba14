#!/bin/bash
# Part 9: the fleet link (issue 10) — propagation latency and throughput through Redis.
#   sudo bench/fleet.sh                  (from the repository root)
# Namespaces on one bridge (198.18.9.0/24): defenders A, B, C, a Redis namespace running
# our own redis-server (temp dir, no persistence), and a scanner.
# Latency: RUNS times, the scanner (a new source address each run) completes a
# handshake on A's trap port 2323 (verified evidence); from A's ban line to the
# "fleet: ... banned" line of B and of C (each logged after the ban is in that node's
# kernel set), from the daemons' own millisecond timestamps. p50 and p99 per node.
# Throughput: N bans signed with the fleet key (python3's hmac, the canonical encoding
# of src/fleet/message.rs) are XADDed in one pipeline; the time from the first XADD to
# B and C having applied all N (their `portsentry status` "applied" count), as bans/s.
# Environment: RUNS (20), N (5000), PORTSENTRY_BIN (default the release build; set it to
# target/debug/portsentry to skip the release build), BENCH_OUT.
# Network safety (shared/design/TESTING.md): every packet stays on veth pairs between
# the namespaces made here (198.18.9.0/24, no default route); firewall changes happen
# inside the defenders' namespaces only; redis-server binds the Redis namespace's
# address only.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nft nc python3 redis-server
RUNS=${RUNS:-20}
N=${N:-5000}
KEY=fleet-bench-key-0123456789abcdef
if [ -n "${PORTSENTRY_BIN:-}" ]; then
    BIN=$PORTSENTRY_BIN
else
    build_release
fi
[ -x "$BIN" ] || die "no $BIN"

SW=$(ns_create sw)
ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$SW" link set br0 up
declare -A NS ADDR
i=0
for h in a b c redis scan; do
    i=$((i + 1))
    NS[$h]=$(ns_create "$h")
    ADDR[$h]=198.18.9.$i
    ip link add "p$i" netns "$SW" type veth peer name eth0 netns "${NS[$h]}"
    ip -n "$SW" link set "p$i" master br0
    ip -n "$SW" link set "p$i" up
    ip -n "${NS[$h]}" addr add "${ADDR[$h]}/24" dev eth0
    ip -n "${NS[$h]}" link set eth0 up
done
for h in a b c redis scan; do
    ip -n "${NS[$h]}" route show default | grep -q . && die "unexpected default route"
done

RD=$BENCH_TMP/redis
mkdir -p "$RD"
ip netns exec "${NS[redis]}" redis-server --port 6379 --bind "${ADDR[redis]}" --save '' \
    --appendonly no --dir "$RD" --protected-mode no >"$RD/log" 2>&1 &
wait_until 10 ip netns exec "${NS[redis]}" redis-cli -h "${ADDR[redis]}" ping || die "redis-server did not start"

start_node() { # NAME
    local h=$1 d=$BENCH_TMP/$1
    mkdir -p "$d"
    printf '%s\n' "$KEY" >"$d/fleet.key"
    chmod 600 "$d/fleet.key"
    printf '127.0.0.1/32\n0.0.0.0\n' >"$d/portsentry.ignore"
    {
        conf_12_keys "$d"
    } >"$d/portsentry.conf"
    cat >"$d/portsentry.toml" <<EOF
[listen]
handshake_ports = [2323]

[fleet]
url = "redis://${ADDR[redis]}:6379/"
key_file = "$d/fleet.key"
node = "node-$h"
rate = 1000000
burst = 1000000

[state]
file = "$d/state.json"

[control]
socket = "$d/portsentry.sock"
EOF
    ip netns exec "${NS[$h]}" "$BIN" -atcp -c "$d/portsentry.conf" --foreground --no-syslog \
        --settings "$d/portsentry.toml" >"$d/daemon.log" 2>&1 &
    wait_until 20 grep -q "fleet: connected to" "$d/daemon.log" \
        || { cat "$d/daemon.log" >&2; die "node $h did not connect"; }
}
for h in a b c; do start_node "$h"; done

log "latency: $RUNS verified bans on A"
for ((r = 1; r <= RUNS; r++)); do
    src=198.18.9.$((100 + r))
    ip -n "${NS[scan]}" addr add "$src/24" dev eth0
    ip netns exec "${NS[scan]}" nc -z -w 2 -s "$src" "${ADDR[a]}" 2323 || true
    for h in b c; do
        wait_until 10 grep -q "fleet: $src/32 banned" "$BENCH_TMP/$h/daemon.log" \
            || die "node $h did not apply the ban of $src"
    done
done

# Milliseconds of day of a daemon line's timestamp (2026-12-02T13:19:13.339+00:00).
python3 - "$BENCH_TMP" "$RUNS" >"$BENCH_TMP/latency.txt" <<'EOF'
import re, sys
tmp, runs = sys.argv[1], int(sys.argv[2])
def stamps(node, pattern):
    out = {}
    for line in open(f"{tmp}/{node}/daemon.log"):
        m = re.match(r"\S+T(\d+):(\d+):(\d+)\.(\d+)", line)
        s = re.search(pattern, line)
        if m and s:
            h, mi, se, ms = map(int, m.groups())
            out.setdefault(s.group(1), ((h * 60 + mi) * 60 + se) * 1000 + ms)
    return out
a = stamps("a", r"Host (198\.18\.9\.\d+) has been banned")
for node in ("b", "c"):
    got = stamps(node, r"fleet: (198\.18\.9\.\d+)/32 banned")
    d = sorted(got[k] - a[k] for k in a if k in got)
    p = lambda q: d[min(len(d) - 1, int(round(q * (len(d) - 1))))]
    print(f"{node} n={len(d)} p50_ms={p(0.5)} p99_ms={p(0.99)} min_ms={d[0]} max_ms={d[-1]}")
EOF

log "throughput: $N signed bans XADDed in one pipeline"
python3 - "$KEY" "$N" >"$BENCH_TMP/xadd.resp" <<'EOF'
import hmac, hashlib, sys, time
key, n = sys.argv[1].encode(), int(sys.argv[2])
now = int(time.time())
names = ["kind", "origin", "net", "evidence", "scan", "ports", "sent", "ends", "offences", "subject"]
out = []
for i in range(n):
    net = f"198.19.{100 + i // 256}.{i % 256}/32"
    vals = ["ban", "node-bench", net, "verified", "TCP connect to TCP port 23", "23",
            str(now), str(now + 3600), "1", ""]
    canon = "portsentry-fleet-1\n" + "".join(f"{k}={v}\n" for k, v in zip(names, vals))
    mac = hmac.new(key, canon.encode(), hashlib.sha256).hexdigest()
    args = ["XADD", "portsentry:bans", "*"]
    for k, v in zip(names, vals):
        args += [k, v]
    args += ["mac", mac]
    out.append(f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args))
sys.stdout.write("".join(out))
EOF
applied() { # NODE → the "applied N" of its status
    "$BIN" -c "$BENCH_TMP/$1/portsentry.conf" --settings "$BENCH_TMP/$1/portsentry.toml" status \
        | sed -n 's/.*applied \([0-9]*\),.*/\1/p'
}
base_b=$(applied b)
base_c=$(applied c)
t0=$(date +%s%N)
ip netns exec "${NS[redis]}" redis-cli -h "${ADDR[redis]}" --pipe <"$BENCH_TMP/xadd.resp" >/dev/null
t_xadd=$(date +%s%N)
declare -A DONE
for ((k = 0; k < 1200; k++)); do
    for h in b c; do
        [ -n "${DONE[$h]:-}" ] && continue
        base=$base_b
        [ "$h" = c ] && base=$base_c
        n=$(applied "$h")
        if [ -n "$n" ] && [ $((n - base)) -ge "$N" ]; then DONE[$h]=$(date +%s%N); fi
    done
    [ -n "${DONE[b]:-}" ] && [ -n "${DONE[c]:-}" ] && break
    sleep 0.05
done
[ -n "${DONE[b]:-}" ] && [ -n "${DONE[c]:-}" ] || die "B or C did not apply all $N bans within 60 s"

echo
echo "Part 9: fleet link through Redis $(redis-server --version | awk '{print $3}') (binary: $BIN)"
echo "verified ban on A -> applied on B / C, $RUNS runs (ms, from the daemons' log timestamps):"
cat "$BENCH_TMP/latency.txt"
xadd_ms=$(((t_xadd - t0) / 1000000))
for h in b c; do
    ms=$(((DONE[$h] - t0) / 1000000))
    echo "throughput: $N bans, XADD pipeline ${xadd_ms} ms, all applied on $h after ${ms} ms: $((N * 1000 / (ms > 0 ? ms : 1))) bans/s"
    result "fleet.throughput.$h.bans_per_s" "$((N * 1000 / (ms > 0 ? ms : 1)))"
done
while read -r node rest; do
    result "fleet.latency.$node" "$rest"
done <"$BENCH_TMP/latency.txt"
