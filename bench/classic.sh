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
# kernel), and whether the attacker ended in the ban set (ours: banned4; 1.2: its
# KILL_ROUTE iptables rule). Each run uses fresh namespaces. Scenarios: ours, and
# pst12 (Debian's PortSentry 1.2 `-tcp`, KILL_ROUTE="/sbin/iptables -I INPUT -s
# $TARGET$ -j DROP", from /usr/sbin/portsentry or PST12_BIN, e.g. the binary .ci/run
# unpacks into target/deb-root; run in a private mount namespace whose /etc is an
# overlay on a tmpfs, as bench/probes.sh does, so the host's /etc is never written).
# Env: RUNS (default 7), SCENARIOS (default "ours pst12" when a 1.2 binary exists),
# BENCH_OUT, BENCH_NO_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nmap nft
RUNS=${RUNS:-7}
DEF_IP=198.18.1.1
ATK_IP=198.18.1.2
PORTS="1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320"

PST12_BIN=${PST12_BIN:-/usr/sbin/portsentry}
[ -x "$PST12_BIN" ] || [ ! -x "$REPO/target/deb-root/portsentry/usr/sbin/portsentry" ] \
    || PST12_BIN=$REPO/target/deb-root/portsentry/usr/sbin/portsentry
if [ -z "${SCENARIOS:-}" ]; then
    SCENARIOS=ours
    [ -x "$PST12_BIN" ] && SCENARIOS="ours pst12"
fi

build_release
[ -x "$BIN" ] || die "no daemon binary at $BIN"

# 1.2 in the defender: /etc is an overlay (lower: the real /etc, read only; upper: a
# tmpfs of a private mount namespace) holding our config at its compiled-in path.
start_pst12() { # NS DIR -> sets PID
    local ns=$1 d=$2 p i
    mkdir -p "$d/ovl"
    ip netns exec "$ns" unshare -m --propagation private /bin/sh -ec '
        d=$1 bin=$2
        mount -t tmpfs -o size=8m,mode=0755 psbench-etc "$d/ovl"
        mkdir -p "$d/ovl/up/portsentry" "$d/ovl/work"
        cp "$d/portsentry.conf" "$d/ovl/up/portsentry/portsentry.conf"
        mount -t overlay psbench-etc -o "lowerdir=/etc,upperdir=$d/ovl/up,workdir=$d/ovl/work" /etc
        cmp -s /etc/portsentry/portsentry.conf "$d/portsentry.conf"
        exec "$bin" -tcp' sh "$d" "$PST12_BIN" >"$d/pst12.out" 2>&1 \
        || { cat "$d/pst12.out" >&2; die "PortSentry 1.2 did not start"; }
    PID=""
    for i in $(seq 1 100); do
        for p in $(ip netns pids "$ns"); do
            [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$PST12_BIN")" ] && PID=$p
        done
        [ -n "$PID" ] && break
        sleep 0.05
    done
    [ -n "$PID" ] || die "PortSentry 1.2 process not found in $ns"
    wait_until 10 sh -c "ip netns exec $ns ss -Hltn | grep -q ':31337 '" || die "PortSentry 1.2 does not listen"
    [ -z "$(findmnt -n -S psbench-etc)" ] || die "bench mount leaked into the root mount namespace"
}

one_run() { # SCENARIO RUN
    local s=$1 r=$2 d def atk open banned
    d="$BENCH_TMP/classic-$s-$r"
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
    PID=""
    if [ "$s" = pst12 ]; then
        echo 'KILL_ROUTE="/sbin/iptables -I INPUT -s $TARGET$ -j DROP"' >>"$d/portsentry.conf"
        start_pst12 "$def" "$d"
    else
        printf '[firewall]\nbackend = "nftables"\n[state]\nfile = "%s/state.json"\n[control]\nsocket = "%s/ps.sock"\n' \
            "$d" "$d" >"$d/portsentry.toml"
        ip netns exec "$def" "$BIN" -tcp -c "$d/portsentry.conf" --foreground --no-syslog \
            --settings "$d/portsentry.toml" >"$d/daemon.log" 2>&1 &
        PID=$!
        wait_until 20 grep -q "PortSentry is now active and listening" "$d/daemon.log" \
            || { cat "$d/daemon.log" >&2; die "our daemon did not become ready"; }
    fi
    timeout 120 ip netns exec "$atk" nmap -sT -Pn -n -T4 --max-retries 1 -p "$PORTS" \
        -oG "$d/nmap.gnmap" "$DEF_IP" >"$d/nmap.txt" 2>&1 || die "nmap failed"
    sleep 0.5
    open=$(grep -o '[0-9]*/open/tcp' "$d/nmap.gnmap" | wc -l)
    banned=no
    if [ "$s" = pst12 ]; then
        ip netns exec "$def" iptables -S INPUT | grep -q -- "-s $ATK_IP/32 -j DROP" && banned=yes
    else
        ip netns exec "$def" nft list set inet portsentry banned4 2>/dev/null | grep -q "$ATK_IP" && banned=yes
    fi
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    echo "scenario=$s run=$r nmap_open=$open banned=$banned" | tee -a "$BENCH_TMP/classic.raw" >&2
    ns_delete "$def"
    ns_delete "$atk"
}

for s in $SCENARIOS; do
    for r in $(seq 1 "$RUNS"); do one_run "$s" "$r"; done
done

field() { grep "^scenario=$1 " "$BENCH_TMP/classic.raw" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
echo
echo "Part 6: classic -tcp, nmap -sT of PortSentry 1.2's 26 TCP_PORTS (median of $RUNS runs)"
for s in $SCENARIOS; do
    no=$(field "$s" nmap_open | median)
    bn="$(field "$s" banned | grep -c yes || true)/$RUNS"
    echo "$s: nmap_open=$no banned=$bn (per run: $(field "$s" nmap_open | tr '\n' ' '))"
    result "classic.$s.nmap_open" "$no"
    result "classic.$s.banned" "$bn"
done
