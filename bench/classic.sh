#!/bin/bash
# Part 6 — the classic -tcp mode: how many trap ports a full connect scan sees open
# before the scanner is banned.
#
# A defender namespace (an open TCP service on 8080) and an attacker namespace, joined
# by a veth pair (198.18.1.1 / 198.18.1.2). The defender runs
#   target/release/portsentry -tcp   (PortSentry 1.2's 26 TCP_PORTS, nftables bans)
# and the attacker
#   nmap -sT -Pn -n -T4 --max-retries 1 -p <the 26 TCP_PORTS> 198.18.1.1
# Counted: ports nmap reported open (each is a completed handshake with a trap port:
# the first one is the evidence, the others were accepted before the ban was in the
# kernel), and whether the attacker ended in the ban set. Each run uses fresh
# namespaces. Env: RUNS (default 7),
# BENCH_OUT, BENCH_NO_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nmap nft
RUNS=${RUNS:-7}
DEF_IP=198.18.1.1
ATK_IP=198.18.1.2
PORTS="1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320"

build_release
[ -x "$BIN" ] || die "no daemon binary at $BIN"

one_run() { # RUN
    local r=$1 d def atk pid open banned
    d="$BENCH_TMP/classic-$r"
    mkdir -p "$d"
    def=$(ns_create "cdef$r")
    atk=$(ns_create "catk$r")
    link_pair "$def" d0 "$DEF_IP/24" "$atk" a0 "$ATK_IP/24"
    printf '127.0.0.1/32\n0.0.0.0\n' >"$d/portsentry.ignore"
    cat >"$d/portsentry.conf" <<EOF
TCP_PORTS="$PORTS"
IGNORE_FILE="$d/portsentry.ignore"
HISTORY_FILE="$d/portsentry.history"
BLOCKED_FILE="$d/portsentry.blocked"
RESOLVE_HOST="0"
BLOCK_TCP="1"
SCAN_TRIGGER="0"
EOF
    printf '[firewall]\nbackend = "nftables"\n[state]\nfile = "%s/state.json"\n[control]\nsocket = "%s/ps.sock"\n' \
        "$d" "$d" >"$d/portsentry.toml"
    ip netns exec "$def" "$BIN" -tcp -c "$d/portsentry.conf" --foreground --no-syslog \
        --settings "$d/portsentry.toml" >"$d/daemon.log" 2>&1 &
    pid=$!
    wait_until 20 grep -q "PortSentry is now active and listening" "$d/daemon.log" \
        || { cat "$d/daemon.log" >&2; die "our daemon did not become ready"; }
    timeout 120 ip netns exec "$atk" nmap -sT -Pn -n -T4 --max-retries 1 -p "$PORTS" \
        -oG "$d/nmap.gnmap" "$DEF_IP" >"$d/nmap.txt" 2>&1 || die "nmap failed"
    sleep 0.5
    open=$(grep -o '[0-9]*/open/tcp' "$d/nmap.gnmap" | wc -l)
    banned=no
    ip netns exec "$def" nft list set inet portsentry banned4 2>/dev/null | grep -q "$ATK_IP" && banned=yes
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "run=$r nmap_open=$open banned=$banned" | tee -a "$BENCH_TMP/classic.raw" >&2
    ns_delete "$def"
    ns_delete "$atk"
}

for r in $(seq 1 "$RUNS"); do one_run "$r"; done

field() { tr ' ' '\n' <"$BENCH_TMP/classic.raw" | sed -n "s/^$1=//p"; }
no=$(field nmap_open | median)
bn="$(field banned | grep -c yes || true)/$RUNS"
echo
echo "Part 6: classic -tcp, nmap -sT of PortSentry 1.2's 26 TCP_PORTS (median of $RUNS runs)"
echo "nmap_open=$no banned=$bn"
result classic.nmap_open "$no"
result classic.banned "$bn"
