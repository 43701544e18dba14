#!/bin/bash
# Part 9 (issue 9 item 6): `portsentry status` while IDLE (default 100) connections that
# send nothing are held open on the daemon's control socket. One defender namespace
# (lo only: no traffic at all is sent), the daemon in it with its socket and files in a
# temp dir; python3 opens the idle connections; `status` is timed RUNS times (a fresh
# set of idle connections each time, 0.3 s old when `status` starts). PORTSENTRY_BIN=
# measures another build (e.g. the one before the change). Output: one line per run,
# then the median.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
need_tools nft python3
RUNS=${RUNS:-5}
ulimit -n 4096
IDLE=${IDLE:-100}
build_release
BIN=${PORTSENTRY_BIN:-$BIN}
[ -x "$BIN" ] || die "no binary at $BIN"

ns=$(ns_create ctl)
d=$BENCH_TMP
cat >"$d/portsentry.conf" <<CONF
TCP_PORTS="1,11,15,79,111"
UDP_PORTS="1,7,9,69"
ADVANCED_PORTS_TCP="1024"
ADVANCED_PORTS_UDP="1024"
ADVANCED_EXCLUDE_TCP="113,139"
ADVANCED_EXCLUDE_UDP="520,138,137,67"
IGNORE_FILE="$d/portsentry.ignore"
HISTORY_FILE="$d/portsentry.history"
BLOCKED_FILE="$d/portsentry.blocked"
HOSTS_DENY_FILE="$d/hosts.deny"
RESOLVE_HOST="0"
BLOCK_TCP="1"
BLOCK_UDP="1"
SCAN_TRIGGER="0"
CONF
printf '127.0.0.1/32\n' >"$d/portsentry.ignore"
printf '[state]\nfile = "%s/state.json"\n\n[control]\nsocket = "%s/ps.sock"\n' "$d" "$d" >"$d/portsentry.toml"
args=(-c "$d/portsentry.conf" --settings "$d/portsentry.toml")
ip netns exec "$ns" "$BIN" "${args[@]}" --foreground --no-syslog -atcp -audp \
    >"$d/daemon.log" 2>&1 &
wait_until 10 test -S "$d/ps.sock" || die "no control socket: $(cat "$d/daemon.log")"
ip netns exec "$ns" "$BIN" "${args[@]}" status >/dev/null 2>&1 || sleep 1

times=()
for ((r = 1; r <= RUNS; r++)); do
    out=$(python3 - "$d/ps.sock" "$IDLE" "$BIN" "$ns" "${args[@]}" <<'PY'
import socket, subprocess, sys, time
path, idle, binary, ns, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
held = []
t0 = time.monotonic()
for _ in range(idle):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    held.append(s)
# Older than the 250 ms after which the daemon may close the oldest silent connection
# for a new one (only when all 256 slots are taken, i.e. IDLE > 256).
time.sleep(0.3)
t = time.monotonic()
p = subprocess.run(["ip", "netns", "exec", ns, binary, *args, "status"],
                   capture_output=True, text=True, timeout=120)
took = time.monotonic() - t
line = (p.stdout.strip() or p.stderr.strip()).splitlines()[-1] if (p.stdout or p.stderr) else ""
print(f"{took:.3f} exit={p.returncode} {line} (connecting took {t - 0.3 - t0:.3f} s)")
for s in held:
    s.close()
PY
)
    log "run $r: $out"
    times+=("${out%% *}")
    # Let the daemon drop what is left of the idle connections before the next run.
    sleep 2
done
med=$(printf '%s\n' "${times[@]}" | median)
echo "status with $IDLE idle control connections: median ${med} s over $RUNS runs (${times[*]})"
result control_idle_status_s "$med"
