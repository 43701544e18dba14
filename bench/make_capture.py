#!/usr/bin/env python3
"""Write a synthetic pcap for the replay benchmark (bench/replay.sh): SCANNERS sources in
198.18.0.0/15 each sending a SYN to PORTS ports of 198.18.0.1, interleaved in time, one
packet every 10 us, plus one benign client exchanging data on port 8080. Ethernet link
type, microsecond time stamps. Only test addresses; nothing is sent anywhere."""
import struct, sys

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def packet(src, dst, sport, dport, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + tcp

def addr(n):
    return bytes([198, 18 + (n >> 16) % 2, (n >> 8) & 0xFF, n & 0xFF])

def main():
    out, scanners, ports = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    local = bytes([198, 18, 0, 1])
    client = bytes([198, 18, 0, 2])
    t = 1_700_000_000 * 1_000_000
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        def write(frame):
            nonlocal t
            t += 10
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), len(frame)))
            f.write(frame)
        for port in range(1, ports + 1):
            for s in range(scanners):
                write(packet(addr(256 + s), local, 40000, port, 0x02))
            if port % 100 == 1:
                write(packet(client, local, 50000, 8080, 0x18, b"GET / HTTP/1.0\r\n\r\n"))
                write(packet(local, client, 8080, 50000, 0x18, b"HTTP/1.0 200 OK\r\n\r\n"))

main()
