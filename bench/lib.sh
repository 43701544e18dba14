# Shared helpers of the benchmark scripts (sourced, not run). Network safety
# (shared/design/TESTING.md): every packet of a benchmark flows over veth pairs between
# network namespaces created here (198.18.0.0/15 only, no default route, no uplink);
# firewall changes happen only inside those namespaces; cleanup (trap EXIT) kills the
# processes inside them by pid and deletes them.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=$TARGET/release/portsentry
EXAMPLES=$TARGET/release/examples
# Results of each part go to $BENCH_OUT (key=value lines); run-all.sh reads them.
BENCH_OUT=${BENCH_OUT:-}

NS_PREFIX="psb$$"
BENCH_NS=()
BENCH_TMP=$(mktemp -d /tmp/psbench.XXXXXX)
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The 1.2 keys the daemon benchmarks share (advanced modes below 1024, blocking, trigger
# 0), with the record files in DIR; printed on stdout, one portsentry.conf line each.
conf_12_keys() { # DIR
    local d=$1
    echo 'TCP_PORTS="1,11,15,79,111,119,143,540,635,1080,1524,2000"'
    echo 'UDP_PORTS="1,7,9,69,161,162,513,635,640,641,700"'
    echo 'ADVANCED_PORTS_TCP="1024"'
    echo 'ADVANCED_PORTS_UDP="1024"'
    echo 'ADVANCED_EXCLUDE_TCP="113,139"'
    echo 'ADVANCED_EXCLUDE_UDP="520,138,137,67"'
    echo "IGNORE_FILE=\"$d/portsentry.ignore\""
    echo "HISTORY_FILE=\"$d/portsentry.history\""
    echo "BLOCKED_FILE=\"$d/portsentry.blocked\""
    echo 'RESOLVE_HOST="0"'
    echo 'BLOCK_TCP="1"'
    echo 'BLOCK_UDP="1"'
    echo 'SCAN_TRIGGER="0"'
}

need_root() {
    [ "$(id -u)" = 0 ] || { echo "skipped: needs root (network namespaces, nftables)" >&2; exit 77; }
}

need_tools() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null || die "missing tool: $t"; done
}

# Builds the daemon and the bench examples (release) unless BENCH_NO_BUILD=1.
build_release() {
    [ "${BENCH_NO_BUILD:-0}" = 1 ] && return 0
    log "building (release) into $TARGET"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p portsentry \
        --bin portsentry --example ban_latency --example ban_fill --example udp_flood) \
        || die "cargo build failed"
}

# Kills every process inside namespace $1 by pid: TERM, up to 3 s, then KILL.
ns_kill_all() {
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [ -n "${pids// /}" ] || return 0
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 30); do
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        [ -n "${pids// /}" ] || return 0
        sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
}

ns_delete() {
    local ns=$1
    ns_kill_all "$ns"
    ip netns del "$ns" 2>/dev/null || true
    local keep=() n
    for n in "${BENCH_NS[@]}"; do [ "$n" = "$ns" ] || keep+=("$n"); done
    BENCH_NS=("${keep[@]}")
}

# Our namespaces: those in BENCH_NS plus any named "$NS_PREFIX-*" (ns_create may run in
# a command substitution, whose BENCH_NS change is lost).
our_namespaces() {
    { printf '%s\n' "${BENCH_NS[@]}"; ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NS_PREFIX}-"; } \
        | grep . | sort -u
}

bench_cleanup() {
    local rc=$? ns
    for ns in $(our_namespaces); do
        ns_kill_all "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
    BENCH_NS=()
    # (Debian's portsentry daemonizes, but inside our defender namespace, so
    # ns_kill_all above has ended it by pid.)
    if [ "$BENCH_KEEP_TMP" = 1 ] || [ $rc != 0 ]; then
        log "kept temp dir $BENCH_TMP"
    else
        rm -rf "$BENCH_TMP"
    fi
    exit $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ns_create NAME-SUFFIX → prints the namespace name; lo up; no routes.
ns_create() {
    local ns="${NS_PREFIX}-$1"
    ip netns add "$ns" || die "ip netns add $ns"
    BENCH_NS+=("$ns")
    ip -n "$ns" link set lo up
    echo "$ns"
}

# link_pair NS1 IF1 ADDR1/PFX NS2 IF2 ADDR2/PFX: a veth pair created directly inside
# the two namespaces (it never appears in the root namespace).
link_pair() {
    local ns1=$1 if1=$2 a1=$3 ns2=$4 if2=$5 a2=$6
    ip link add "$if1" netns "$ns1" type veth peer name "$if2" netns "$ns2" || die "veth"
    ip -n "$ns1" addr add "$a1" dev "$if1"
    ip -n "$ns2" addr add "$a2" dev "$if2"
    ip -n "$ns1" link set "$if1" up
    ip -n "$ns2" link set "$if2" up
    # No default route anywhere: only the connected /24.
    if ip -n "$ns1" route show default | grep -q . || ip -n "$ns2" route show default | grep -q .; then
        die "unexpected default route in a bench namespace"
    fi
}

# wait_until SECONDS CMD...: polls CMD every 50 ms, bounded.
wait_until() {
    local secs=$1 i n
    shift
    n=$((secs * 20))
    for ((i = 0; i < n; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}

# median of numbers on stdin (one per line); "-" if none.
median() {
    sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

# result KEY VALUE: appends to $BENCH_OUT (if set).
result() {
    [ -n "$BENCH_OUT" ] && echo "$1=$2" >>"$BENCH_OUT"
    return 0
}

machine_desc() {
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "nft: $(nft --version 2>/dev/null)"
    echo "iptables: $(iptables -V 2>/dev/null)"
    echo "nmap: $(nmap --version 2>/dev/null | head -1)"
    echo "portsentry (Debian): $(dpkg-query -W -f '${Version}' portsentry 2>/dev/null || echo 'not installed')"
}
