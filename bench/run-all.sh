#!/bin/bash
# Runs every benchmark side by side in one run and prints one summary.
#   sudo bench/run-all.sh            (from the repository root; ~4 minutes)
# Parts (each runnable alone, same environment variables):
#   bench/probes.sh      1. probes answered after the first trap probe (nmap -sS)
#   bench/ban-latency.sh 2. user-space decision → element in the kernel set
#   bench/drop-cost.sh   3. per-packet cost of the drop with 100,000 bans
# Needs root, nmap, tcpdump, nft, iptables (+ iptables-legacy if available), python3,
# cargo; installs Debian's portsentry package (service kept from starting) if absent.
# All traffic stays in network namespaces made by the scripts (shared/design/TESTING.md).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
[ "$(id -u)" = 0 ] || { echo "skipped: needs root (network namespaces, nftables)" >&2; exit 77; }

WORK=$(mktemp -d /tmp/psbench-all.XXXXXX)
export BENCH_OUT=$WORK/results.kv
: >"$BENCH_OUT"
ROOT_FW_BEFORE=$({ nft list ruleset 2>/dev/null; iptables-save 2>/dev/null | grep -v '^#' || true; } | sha256sum | cut -c1-16)
START=$(date +%s)

echo "== machine"
# shellcheck source=lib.sh
(source "$BENCH_DIR/lib.sh" >/dev/null 2>&1; machine_desc; trap - EXIT; rm -rf "$BENCH_TMP")
echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (work tree has changes)')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== build (release)" >&2
(cd "$REPO" && cargo build --release -q -p portsentry --bin portsentry \
    --example ban_latency --example ban_fill --example udp_flood)
export BENCH_NO_BUILD=1
[ -x /usr/sbin/portsentry ] || bash "$BENCH_DIR/install-portsentry.sh" >&2

for part in probes ban-latency drop-cost; do
    echo "== $part (progress in $WORK/$part.log)" >&2
    t0=$(date +%s)
    if ! bash "$BENCH_DIR/$part.sh" >"$WORK/$part.out" 2>"$WORK/$part.log"; then
        echo "!! $part failed; last lines of its log:" >&2
        tail -20 "$WORK/$part.log" >&2
        exit 1
    fi
    echo "   $part took $(($(date +%s) - t0)) s" >&2
done

kv() { sed -n "s/^$1=//p" "$BENCH_OUT" | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0) print "-"; else printf "%.0f×", a/b }'; }

cat "$WORK/probes.out"
echo
cat "$WORK/ban-latency.out"
echo
cat "$WORK/drop-cost.out"
echo
echo "== side by side (medians)"
printf '%-52s %16s %26s %8s\n' measure "portsentry" "PortSentry 1.2 / shell" ratio
printf '%-52s %16s %26s %8s\n' "1. defender replies after first trap probe" \
    "$(kv probes.ours.replies_after)" "$(kv probes.pst12.replies_after)" "-"
printf '%-52s %16s %26s %8s\n' "1. ports nmap saw open / closed" \
    "$(kv probes.ours.nmap_open) / $(kv probes.ours.nmap_closed)" "$(kv probes.pst12.nmap_open) / $(kv probes.pst12.nmap_closed)" "-"
printf '%-52s %16s %26s %8s\n' "1. ms from first trap probe to last reply" \
    "$(kv probes.ours.window_ms)" "$(kv probes.pst12.window_ms)" "-"
printf '%-52s %16s %26s %8s\n' "2. ban latency median µs (netlink vs fork nft)" \
    "$(kv latency.netlink_add.median_us)" "$(kv latency.fork_nft_add_element.median_us)" \
    "$(ratio "$(kv latency.fork_nft_add_element.median_us)" "$(kv latency.netlink_add.median_us)")"
printf '%-52s %16s %26s %8s\n' "2. ban latency p99 µs (netlink vs fork nft)" \
    "$(kv latency.netlink_add.p99_us)" "$(kv latency.fork_nft_add_element.p99_us)" \
    "$(ratio "$(kv latency.fork_nft_add_element.p99_us)" "$(kv latency.netlink_add.p99_us)")"
printf '%-52s %16s %26s %8s\n' "2. ban latency median µs (netlink vs sh -c iptables -I)" \
    "$(kv latency.netlink_add.median_us)" "$(kv latency.sh_c_iptables_insert.median_us)" \
    "$(ratio "$(kv latency.sh_c_iptables_insert.median_us)" "$(kv latency.netlink_add.median_us)")"
printf '%-52s %16s %26s %8s\n' "3. ns/packet, 100k bans (set vs iptables-nft, last)" \
    "$(kv drop.ours_100k.ns_per_pkt)" "$(kv drop.ipt_nft_100k_last.ns_per_pkt)" \
    "$(ratio "$(kv drop.ipt_nft_100k_last.ns_per_pkt)" "$(kv drop.ours_100k.ns_per_pkt)")"
if [ -n "$(kv drop.ipt_legacy_100k_last.ns_per_pkt)" ]; then
    printf '%-52s %16s %26s %8s\n' "3. ns/packet, 100k bans (set vs iptables-legacy, last)" \
        "$(kv drop.ours_100k.ns_per_pkt)" "$(kv drop.ipt_legacy_100k_last.ns_per_pkt)" \
        "$(ratio "$(kv drop.ipt_legacy_100k_last.ns_per_pkt)" "$(kv drop.ours_100k.ns_per_pkt)")"
fi
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); total $(($(date +%s) - START)) s"

# Safety checks after the run (read only).
echo "== checks"
left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep '^psb' || true)
echo "bench namespaces left: ${left:-none}"
own_ns=$(readlink /proc/self/ns/net)
rootps=""
for p in $(pgrep -x portsentry || true); do
    [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$own_ns" ] && rootps+="$p "
done
echo "portsentry processes in the root network namespace: ${rootps:-none}"
deb=""
for p in $(pgrep -x portsentry || true); do
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/portsentry ] && deb+="$p "
done
echo "Debian /usr/sbin/portsentry processes anywhere: ${deb:-none}"
echo "bench mounts in the root mount namespace: $(findmnt -n -S psbench-etc | wc -l)"
ROOT_FW_AFTER=$({ nft list ruleset 2>/dev/null; iptables-save 2>/dev/null | grep -v '^#' || true; } | sha256sum | cut -c1-16)
echo "root namespace firewall unchanged: $([ "$ROOT_FW_BEFORE" = "$ROOT_FW_AFTER" ] && echo yes || echo "NO ($ROOT_FW_BEFORE → $ROOT_FW_AFTER)")"
echo "raw logs: $WORK"
