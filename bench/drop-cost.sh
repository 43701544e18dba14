#!/bin/bash
# Part 3 — per-packet cost of dropping a banned source with 100,000 bans.
#
# Defender and attacker namespaces joined by a veth pair (198.18.3.1 / 198.18.3.2).
# The attacker's address is banned; a one-thread sender (examples/udp_flood.rs, one
# sendto per 18-byte UDP datagram, pinned to one CPU) sends to 198.18.3.1:9 until
# COUNT packets or MAX_SECS seconds. A veth delivers each packet to the defender in
# the sender's own softirq, so the sender's rate includes the defender's cost of
# dropping it. Cases (each in fresh namespaces):
#   baseline    no rules: the datagram reaches UDP (closed port; ICMP unreachable is
#               rate limited)
#   nft_1rule   one nftables rule `ip saddr 198.18.3.2 drop` (floor of any drop)
#   ours_100k   our table (the daemon's fast path, TrapSpec as the daemon applies it)
#               with 100,000 elements in banned4 (BanSetWriter::add_many), the drop
#               in the input hook
#   ours_100k_early  the same with early drop: the ban sets matched in prerouting at
#               raw priority (-300), before routing
#   ours_100k_ct / ours_100k_early_ct  the same two on a host whose own firewall
#               uses connection tracking (a table with `ct state established,related
#               accept` in input, as most host firewalls have): conntrack (prerouting
#               -200) then sees every packet the input hook drops, but none that the
#               early chain drops; the conntrack entries left are printed at the end
#   ipt_nft_100k_last   iptables (iptables-nft) 100,000 `-s ADDR -j DROP` rules in
#               INPUT, loaded with iptables-restore, in the order that repeated
#               `iptables -I` (PortSentry's KILL_ROUTE) leaves them: newest first; the
#               attacker was banned first, so its rule is the last, position 100,000
#   ipt_nft_100k_first  the same plus one `-I INPUT 1` rule for the attacker (pos. 1)
#   ipt_legacy_100k_last / ipt_legacy_100k_first — the same with iptables-legacy
# Env: RUNS (default 7), COUNT (200000), MAX_SECS (3), NBANS (100000), CASES,
# BENCH_OUT, BENCH_NO_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools ip nft iptables iptables-restore taskset
RUNS=${RUNS:-7}
COUNT=${COUNT:-200000}
MAX_SECS=${MAX_SECS:-3}
NBANS=${NBANS:-100000}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
CASES=${CASES:-"baseline nft_1rule ours_100k ours_100k_early ipt_nft_100k_last ipt_nft_100k_first ipt_legacy_100k_last ipt_legacy_100k_first"}
if ! command -v iptables-legacy-restore >/dev/null; then
    log "iptables-legacy not available: legacy cases skipped"
    CASES=$(echo "$CASES" | tr ' ' '\n' | grep -v legacy | tr '\n' ' ')
fi
DEF_IP=198.18.3.1
ATK_IP=198.18.3.2
SENDER_CPU=$(($(nproc) - 1))

build_release
[ -x "$EXAMPLES/udp_flood" ] && [ -x "$EXAMPLES/ban_fill" ] || die "examples not built in $EXAMPLES"

# iptables-restore input: the attacker banned first, then NBANS-1 others from
# 198.18.64.0 up; with -I each new rule goes first, so the file lists the newest
# first and the attacker's rule last.
RULES=$BENCH_TMP/rules-100k.txt
"$PY" - "$NBANS" "$ATK_IP" >"$RULES" <<'PYEOF'
import ipaddress, sys
n, atk = int(sys.argv[1]), sys.argv[2]
base = int(ipaddress.IPv4Address("198.18.64.0"))
out = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
for i in range(n - 2, -1, -1):
    a = ipaddress.IPv4Address(base + i)
    assert a in ipaddress.IPv4Network("198.18.0.0/15")
    out.append(f"-A INPUT -s {a}/32 -j DROP")
out.append(f"-A INPUT -s {atk}/32 -j DROP")
out.append("COMMIT")
print("\n".join(out))
PYEOF

snmp() { # NS → "InReceives InDelivers UdpInDatagrams UdpNoPorts"
    ip netns exec "$1" cat /proc/net/snmp | awk '
        $1=="Ip:" && $2 ~ /^[0-9]/ {print_ip=1; for(i=2;i<=NF;i++) ip[i]=$i}
        $1=="Ip:" && $2 !~ /^[0-9]/ {for(i=2;i<=NF;i++) iph[$i]=i}
        $1=="Udp:" && $2 !~ /^[0-9]/ {for(i=2;i<=NF;i++) udh[$i]=i}
        $1=="Udp:" && $2 ~ /^[0-9]/ {for(i=2;i<=NF;i++) ud[i]=$i}
        END {print ip[iph["InReceives"]], ip[iph["InDelivers"]], ud[udh["InDatagrams"]], ud[udh["NoPorts"]]}'
}
softirq_ticks() { awk '$1=="cpu" {print $8}' /proc/stat; }

setup_case() { # CASE DEF → prints a short note about the ruleset
    local c=$1 def=$2 t0 t1
    case $c in
    baseline) echo "no rules" ;;
    nft_1rule)
        ip netns exec "$def" nft -f - <<NFT
add table inet psbfloor
add chain inet psbfloor input { type filter hook input priority -10; policy accept; }
add rule inet psbfloor input ip saddr $ATK_IP drop
NFT
        echo "1 rule"
        ;;
    ours_100k)
        ip netns exec "$def" "$EXAMPLES/ban_fill" --netns "$def" --first "$ATK_IP" --count "$NBANS" | tr '\n' ' '
        ip netns exec "$def" nft list chain inet portsentry input | grep -n "@banned4 drop" | sed 's/^/banned4-drop-rule-line:/' | tr '\n' ' '
        ;;
    ours_100k_early)
        ip netns exec "$def" "$EXAMPLES/ban_fill" --netns "$def" --first "$ATK_IP" --count "$NBANS" --early | tr '\n' ' '
        ip netns exec "$def" nft list chain inet portsentry early | grep -n "@banned4 drop\|hook" | sed 's/^/early:/' | tr '\n' ' '
        ;;
    ours_100k_ct|ours_100k_early_ct)
        local early=""
        [ "$c" = ours_100k_early_ct ] && early=--early
        ip netns exec "$def" "$EXAMPLES/ban_fill" --netns "$def" --first "$ATK_IP" --count "$NBANS" $early | tr '\n' ' '
        ip netns exec "$def" nft -f - <<NFT
add table inet psbhostfw
add chain inet psbhostfw input { type filter hook input priority 0; policy accept; }
add rule inet psbhostfw input ct state established,related accept
NFT
        echo "+ host firewall with conntrack"
        ;;
    ipt_nft_*|ipt_legacy_*)
        local restore=iptables-restore ipt=iptables
        [[ $c == ipt_legacy_* ]] && restore=iptables-legacy-restore ipt=iptables-legacy
        t0=$(date +%s.%N)
        ip netns exec "$def" "$restore" <"$RULES" || die "$restore failed"
        t1=$(date +%s.%N)
        if [[ $c == *_first ]]; then
            ip netns exec "$def" "$ipt" -I INPUT 1 -s "$ATK_IP" -j DROP
        fi
        local n pos
        n=$(ip netns exec "$def" "$ipt" -S INPUT 2>/dev/null | grep -c -- '-j DROP')
        pos=$(ip netns exec "$def" "$ipt" -S INPUT 2>/dev/null | grep -- '-j DROP' | grep -n -- "-s $ATK_IP/32 " | cut -d: -f1 | tr '\n' ',')
        printf '%s: %s DROP rules, attacker at position(s) %s restore took %.2fs' "$ipt" "$n" "${pos%,}" "$(echo "$t1 - $t0" | bc -l)"
        ;;
    *) die "unknown case $c" ;;
    esac
}

declare -A DEF_NS ATK_NS
setup_all() {
    local c i=0 def atk note
    for c in $CASES; do
        i=$((i + 1))
        def=$(ns_create "d$i")
        atk=$(ns_create "a$i")
        link_pair "$def" d0 "$DEF_IP/24" "$atk" a0 "$ATK_IP/24"
        DEF_NS[$c]=$def
        ATK_NS[$c]=$atk
        note=$(setup_case "$c" "$def")
        log "$c ($def): $note"
        result "drop.$c.note" "$note"
        # Warm-up: neighbour resolution, caches.
        taskset -c "$SENDER_CPU" ip netns exec "$atk" "$EXAMPLES/udp_flood" --netns "$atk" --src "$ATK_IP" \
            --dst "$DEF_IP:9" --count 20000 --max-secs 0.5 >/dev/null
    done
}

one_run() { # CASE RUN
    local c=$1 r=$2 def=${DEF_NS[$1]} atk=${ATK_NS[$1]} out s0 s1 n0 n1 line
    n0=$(snmp "$def")
    s0=$(softirq_ticks)
    out=$(taskset -c "$SENDER_CPU" ip netns exec "$atk" "$EXAMPLES/udp_flood" --netns "$atk" --src "$ATK_IP" \
        --dst "$DEF_IP:9" --count "$COUNT" --max-secs "$MAX_SECS")
    s1=$(softirq_ticks)
    n1=$(snmp "$def")
    line="case=$c run=$r ${out#FLOOD } softirq_ticks=$((s1 - s0)) $(paste <(echo "$n0" | tr ' ' '\n') <(echo "$n1" | tr ' ' '\n') \
        | awk 'BEGIN{split("in_receives in_delivers udp_in udp_noports",k," ")} {printf "%s=%d ", k[NR], $2-$1}')"
    echo "$line" | tee -a "$BENCH_TMP/drop.raw" >&2
}

# All cases are set up side by side, then measured round-robin (the starting case
# rotates each round), so background load on this shared machine hits every case alike.
setup_all
read -r -a CASE_ARR <<<"$CASES"
NC=${#CASE_ARR[@]}
for r in $(seq 1 "$RUNS"); do
    for k in $(seq 0 $((NC - 1))); do
        one_run "${CASE_ARR[$(((k + r - 1) % NC))]}" "$r"
    done
done
for c in $CASES; do
    if [[ $c == *_ct ]]; then
        n=$(ip netns exec "${DEF_NS[$c]}" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo "?")
        log "$c: conntrack entries in the defender after the runs: $n"
        result "drop.$c.conntrack_entries" "$n"
    fi
    ns_delete "${DEF_NS[$c]}"
    ns_delete "${ATK_NS[$c]}"
done

field() { grep "^case=$1 " "$BENCH_TMP/drop.raw" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo
echo "Part 3: per-packet cost of the drop, $NBANS bans (median of $RUNS runs; one sender thread on CPU $SENDER_CPU, up to $COUNT packets or ${MAX_SECS}s per run)"
printf '%-22s %12s %12s %10s %14s %14s\n' case pkts_per_s ns_per_pkt sent delivered_pkts extra_ns_vs_1rule
floor=$(field nft_1rule ns_per_pkt | median)
for c in $CASES; do
    pps=$(field "$c" pps | median)
    nspp=$(field "$c" ns_per_pkt | median)
    sent=$(field "$c" sent | median)
    deliv=$(field "$c" in_delivers | median)
    extra="-"
    [ "$floor" != "-" ] && [ "$c" != baseline ] && extra=$(awk -v a="$nspp" -v b="$floor" 'BEGIN{printf "%.0f", a-b}')
    printf '%-22s %12s %12s %10s %14s %14s\n' "$c" "$pps" "$nspp" "$sent" "$deliv" "$extra"
    result "drop.$c.pps" "$pps"
    result "drop.$c.ns_per_pkt" "$nspp"
    result "drop.$c.sent" "$sent"
    result "drop.$c.delivered" "$deliv"
    result "drop.$c.extra_ns" "$extra"
done
echo "(delivered_pkts = defender's Ip InDelivers per run: 0 means every packet was dropped before UDP)"
