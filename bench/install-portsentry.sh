#!/bin/bash
# Installs Debian's portsentry package (PortSentry 1.2, the reference) without letting
# its service start: a /usr/sbin/policy-rc.d that exits 101 is in place during the
# install. If this script created it, it removes it afterwards; a policy-rc.d that was
# already there (e.g. a container image's own) is left exactly as it was.
# The daemon is then only ever run inside a bench namespace (see lib.sh).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-portsentry: needs root" >&2; exit 1; }

if [ -x /usr/sbin/portsentry ] && dpkg -s portsentry >/dev/null 2>&1; then
    echo "portsentry package already installed: $(dpkg -s portsentry | sed -n 's/^Version: //p')"
    exit 0
fi

POLICY=/usr/sbin/policy-rc.d
created=0
if [ -e "$POLICY" ]; then
    if [ -x "$POLICY" ] && { "$POLICY" portsentry start >/dev/null 2>&1; [ $? = 101 ]; }; then
        echo "existing $POLICY already refuses service starts (exit 101); leaving it as is"
    else
        echo "install-portsentry: $POLICY exists but does not exit 101; not touching it, refusing to install" >&2
        exit 1
    fi
else
    printf '#!/bin/sh\n# temporary: added by portsentry bench/install-portsentry.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created=1
fi
cleanup() { if [ "$created" = 1 ]; then rm -f "$POLICY"; echo "removed temporary $POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
# Another apt may be running (shared machine): wait for the lock, bounded.
apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends portsentry

# The package's init script must not have started it (policy-rc.d), and if some
# other path did, stop it: only processes in the root pid/net namespace named
# exactly portsentry that run /usr/sbin/portsentry.
for pid in $(pgrep -x portsentry || true); do
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/sbin/portsentry ]; then
        echo "install-portsentry: service process $pid was started; stopping it" >&2
        kill "$pid" || true
    fi
done
echo "installed: $(dpkg -s portsentry | sed -n 's/^Version: //p')"
