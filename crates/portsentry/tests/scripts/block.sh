#!/bin/sh
# KILL_ROUTE helper for the system tests: block.sh ADDRESS
# Inserts a DROP rule for ADDRESS into INPUT (iptables, or ip6tables for an IPv6
# address). It runs in the daemon's network namespace, which the test created.
# Safety: refuses to run in the root network namespace (that of pid 1).
set -u
target="${1:?usage: block.sh ADDRESS}"
if [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ]; then
    echo "block.sh: refusing to touch the root namespace's firewall" >&2
    exit 4
fi
case "$target" in
    *:*) exec ip6tables -w 5 -I INPUT -s "$target" -j DROP ;;
    *) exec iptables -w 5 -I INPUT -s "$target" -j DROP ;;
esac
