#!/usr/bin/python3
"""Forged TCP SYNs for the system tests: forge_syn.py DST PORT SRC [SRC...]

One SYN from each SRC (IPv4) to DST:PORT through a raw socket, as fast as the
socket takes them. Every address must lie in 198.18.0.0/15 (TESTING.md); run it
only inside a test namespace.
"""
import ipaddress
import socket
import struct
import sys

NET = ipaddress.ip_network("198.18.0.0/15")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    dst, port, srcs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    for a in [dst] + srcs:
        if ipaddress.ip_address(a) not in NET:
            sys.exit(f"forge_syn.py: {a} is outside 198.18.0.0/15")
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d = socket.inet_aton(dst)
    for i, src in enumerate(srcs[:100000]):
        s = socket.inet_aton(src)
        sport = 40000 + i % 20000
        tcp = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
        c = csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s, d)
        raw.sendto(ip + tcp, (dst, 0))


main()
