#!/bin/sh
# Cost of scraping the metrics endpoint (BENCHMARKS.md part 12).
#   sudo bench/metrics-scrape.sh [BINARY] [SCRAPES]
# Runs the daemon (-atcp, [metrics] listen = 127.0.0.1:9512) in a fresh network
# namespace that has only loopback (unshare -n; nothing outside it is touched), scrapes
# it SCRAPES times with curl, and prints the daemon's CPU time for them and its RSS.
set -eu
BIN=${1:-target/release/portsentry}
N=${2:-1000}
if [ "${INSIDE_NETNS:-}" != 1 ]; then
    exec env INSIDE_NETNS=1 unshare -n "$0" "$BIN" "$N"
fi
D=$(mktemp -d /tmp/ps-metrics-bench.XXXXXX)
trap 'rm -rf "$D"' EXIT
cat > "$D/portsentry.conf" <<CONF
TCP_PORTS="1,11,15,79,111"
ADVANCED_PORTS_TCP="1024"
ADVANCED_EXCLUDE_TCP="113,139"
IGNORE_FILE="$D/portsentry.ignore"
HISTORY_FILE="$D/portsentry.history"
BLOCKED_FILE="$D/portsentry.blocked"
RESOLVE_HOST="0"
BLOCK_TCP="1"
SCAN_TRIGGER="0"
CONF
echo 127.0.0.1/32 > "$D/portsentry.ignore"
cat > "$D/settings.toml" <<TOML
[state]
file = "$D/state.json"
[control]
socket = "$D/ps.sock"
[metrics]
listen = "127.0.0.1:9512"
TOML
ip link set lo up
"$BIN" -atcp -c "$D/portsentry.conf" --foreground --no-syslog --settings "$D/settings.toml" 2>"$D/err" &
PID=$!
i=0
while [ $i -lt 100 ] && ! grep -q "now active" "$D/err"; do sleep 0.1; i=$((i + 1)); done
echo "body bytes: $(curl -s http://127.0.0.1:9512/metrics | wc -c)"
t0=$(awk '{print $14 + $15}' /proc/$PID/stat)
s=$(date +%s%N)
i=0
while [ $i -lt "$N" ]; do curl -s -o /dev/null http://127.0.0.1:9512/metrics; i=$((i + 1)); done
e=$(date +%s%N)
t1=$(awk '{print $14 + $15}' /proc/$PID/stat)
echo "scrapes=$N wall_ms=$(((e - s) / 1000000)) daemon_cpu_ticks=$((t1 - t0)) (CLK_TCK $(getconf CLK_TCK))"
grep VmRSS /proc/$PID/status
kill $PID
wait $PID || true
