#!/usr/bin/env bash
# BENCHMARKS part 10: `portsentry replay` over a large capture. A synthetic pcap
# (bench/make_capture.py: SCANNERS sources x PORTS SYNs to 198.18.0.1, one every 10 us,
# plus a benign client) is replayed with the embedded defaults; farm-bench gives wall,
# CPU and peak memory over RUNS runs. No packet is sent: the capture is a file, and the
# replay bans, runs and writes nothing.
#   SCANNERS=1000 PORTS=1000 RUNS=3 bash bench/replay.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=$TARGET/release/portsentry
SCANNERS=${SCANNERS:-1000}
PORTS=${PORTS:-1000}
RUNS=${RUNS:-3}
[ "${BENCH_NO_BUILD:-0}" = 1 ] || (cd "$REPO" && cargo build --release -p portsentry --bin portsentry)
TMP=$(mktemp -d /tmp/psreplay.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
python3 "$BENCH_DIR/make_capture.py" "$TMP/capture.pcap" "$SCANNERS" "$PORTS"
size=$(stat -c %s "$TMP/capture.pcap")
packets=$(( SCANNERS * PORTS + 2 * ((PORTS + 99) / 100) ))
echo "capture: $packets packets, $size bytes"
"$BIN" replay "$TMP/capture.pcap" --local 198.18.0.1 --json > "$TMP/report.json"
python3 - "$TMP/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
banned = sum(1 for s in r["sources"].values() if s["bans"])
print(f"report: {r['packets']} packets, {len(r['sources'])} sources, {banned} banned, "
      f"{r['bans_in_force']} set elements, {len(r['lines'])} other lines")
PY
farm-bench -n "$RUNS" --timeout 900 -- "$BIN" replay "$TMP/capture.pcap" --local 198.18.0.1
