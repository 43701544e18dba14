#!/bin/sh
# Runs Debian's own /etc/init.d/portsentry against our binary, for system_initd.rs.
# Run only as: ip netns exec TESTNS unshare -m -p -f --mount-proc --propagation private \
#   sh initd.sh WORK PKGROOT BIN SYSLOG_SOCK HOST_MNT_NS
# (HOST_MNT_NS: `readlink /proc/self/ns/mnt` of the test process, which this script's
# own mount namespace must differ from.)
# Everything it changes is inside that private mount and pid namespace: /etc, /usr/sbin
# and /usr/lib are overlays whose upper layers live in WORK (the host's files are the
# read-only lower layers), /var/lib, /run and /dev are private tmpfs, and /dev/log is the
# test's own syslog socket. When this shell (pid 1 of the namespace) ends, every process
# it started ends with it.
#
# Steps: start (output in WORK/start.out), then WORK/started; wait (at most 180 s) for
# WORK/stop; stop (WORK/stop.out), wait (at most 15 s) for no portsentry process
# (WORK/ps.after); then a broken configuration (TCP_PORTS removed): start again
# (WORK/broken.out), stop, WORK/done.
set -eu
W=$1 PKG=$2 BIN=$3 SOCK=$4 HOST_MNT=$5

# Refuse to touch anything unless this is a new mount and pid namespace.
[ "$(readlink /proc/self/ns/mnt)" != "$HOST_MNT" ] || { echo "still in the test's mount namespace" >&2; exit 90; }
[ "$$" = 1 ] || { echo "not pid 1 of a new pid namespace" >&2; exit 90; }
mount --make-rprivate /

mkdir -p "$W/etc-up" "$W/etc-work" "$W/sbin-up" "$W/sbin-work" "$W/lib-up/portsentry" "$W/lib-work" "$W/dev.host"
cp -a "$PKG/etc/." "$W/etc-up/"
mkdir -p "$W/etc-up/default"
# What Debian's postinst writes on first install.
printf 'TCP_MODE="tcp"\nUDP_MODE="udp"\n' >"$W/etc-up/default/portsentry"
mount -t overlay pst-etc -o "lowerdir=/etc,upperdir=$W/etc-up,workdir=$W/etc-work" /etc
cp "$BIN" "$W/sbin-up/portsentry"
mount -t overlay pst-sbin -o "lowerdir=/usr/sbin,upperdir=$W/sbin-up,workdir=$W/sbin-work" /usr/sbin
cp -a "$PKG/usr/lib/portsentry/." "$W/lib-up/portsentry/"
mount -t overlay pst-lib -o "lowerdir=/usr/lib,upperdir=$W/lib-up,workdir=$W/lib-work" /usr/lib
mount -t tmpfs -o mode=0755 pst-varlib /var/lib
mkdir -p /var/lib/portsentry
mount -t tmpfs -o mode=0755 pst-run /run
mount --bind /dev "$W/dev.host"
mount -t tmpfs -o mode=0755 pst-dev /dev
for n in null zero full random urandom tty; do
    touch "/dev/$n"
    mount --bind "$W/dev.host/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
touch /dev/log
mount --bind "$SOCK" /dev/log

/etc/init.d/portsentry start >"$W/start.out" 2>&1 || echo "exit $?" >>"$W/start.out"
touch "$W/started"
i=0
while [ ! -e "$W/stop" ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done

/etc/init.d/portsentry stop >"$W/stop.out" 2>&1 || echo "exit $?" >>"$W/stop.out"
i=0
while ps -eo comm= | grep -q '^portsentry$' && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
ps -eo pid=,args= >"$W/ps.after"

grep -v '^TCP_PORTS=' /etc/portsentry/portsentry.conf >"$W/broken.conf"
cp "$W/broken.conf" /etc/portsentry/portsentry.conf
/etc/init.d/portsentry start >"$W/broken.out" 2>&1 || echo "exit $?" >>"$W/broken.out"
/etc/init.d/portsentry stop >/dev/null 2>&1 || true
touch "$W/done"
