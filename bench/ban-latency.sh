#!/bin/bash
# Part 2 — from a decision in user space to the element in the kernel's ban set.
#
# Runs examples/ban_latency.rs, which moves itself into a fresh network namespace
# (unshare(CLONE_NEWNET), asserted) before creating our table (Nft::apply) and then
# times, per ban, until the kernel's answer:
#   netlink_add             BanSetWriter::add (one netlink batch, waits for the ACK)
#   fork_nft_add_element    fork+exec `nft add element inet portsentry banned4 { A timeout 1h }`
#   sh_c_nft_add_element    the same through /bin/sh -c (what system() does)
#   sh_c_iptables_insert    /bin/sh -c "iptables -I INPUT -s A -j DROP" (PortSentry 1.2's
#                           KILL_ROUTE as commonly configured; iptables-nft here)
#   ..._after_100000        netlink and fork nft again with 100,000 elements in the set
# Env: NETLINK (default 2000 samples), FORK (default 300), PRELOAD (100000), BENCH_OUT,
# BENCH_NO_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need_tools nft iptables
NETLINK=${NETLINK:-2000}
FORK=${FORK:-300}
PRELOAD=${PRELOAD:-100000}
build_release
[ -x "$EXAMPLES/ban_latency" ] || die "no $EXAMPLES/ban_latency"

timeout 300 "$EXAMPLES/ban_latency" --netlink "$NETLINK" --fork "$FORK" --preload "$PRELOAD" \
    | tee "$BENCH_TMP/latency.raw" >&2

echo
echo "Part 2: user-space decision to element in the set (µs, each sample waits for the kernel's answer)"
printf '%-38s %6s %10s %10s %10s %10s\n' method n median_us p99_us mean_us max_us
while read -r tag name rest; do
    [ "$tag" = RESULT ] || continue
    n=$(echo "$rest" | tr ' ' '\n' | sed -n 's/^n=//p')
    med=$(echo "$rest" | tr ' ' '\n' | sed -n 's/^median_us=//p')
    p99=$(echo "$rest" | tr ' ' '\n' | sed -n 's/^p99_us=//p')
    mean=$(echo "$rest" | tr ' ' '\n' | sed -n 's/^mean_us=//p')
    max=$(echo "$rest" | tr ' ' '\n' | sed -n 's/^max_us=//p')
    printf '%-38s %6s %10s %10s %10s %10s\n' "$name" "$n" "$med" "$p99" "$mean" "$max"
    result "latency.$name.n" "$n"
    result "latency.$name.median_us" "$med"
    result "latency.$name.p99_us" "$p99"
done <"$BENCH_TMP/latency.raw"
grep '^INFO' "$BENCH_TMP/latency.raw" || true
