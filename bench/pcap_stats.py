#!/usr/bin/env python3
"""Counts, in a capture taken on the attacker's veth during an nmap SYN scan, what the
defender sent back after the first probe to a trapped port, and what nmap reported.

usage: pcap_stats.py PCAP NMAP_XML ATTACKER DEFENDER TRAPPED_SPEC
TRAPPED_SPEC: port ranges like "1-1023" minus "!113,!139,!80" e.g. "1-1023,!113,!139,!80".
Prints key=value pairs on one line.
"""
import struct
import sys
import xml.etree.ElementTree as ET


def trapped_set(spec):
    ports, minus = set(), set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        neg = part.startswith("!")
        part = part.lstrip("!")
        lo, _, hi = part.partition("-")
        rng = range(int(lo), int(hi or lo) + 1)
        (minus if neg else ports).update(rng)
    return ports - minus


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B2C3D4:
        endian, tsdiv = "<", 1e6
    elif magic == 0xA1B23C4D:
        endian, tsdiv = "<", 1e9
    elif magic == 0xD4C3B2A1:
        endian, tsdiv = ">", 1e6
    else:
        raise SystemExit(f"unknown pcap magic {magic:#x}")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"unsupported linktype {linktype}")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6 or len(ip) < ihl + 14:
            continue
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        tcp = ip[ihl:]
        sport, dport = struct.unpack("!HH", tcp[:4])
        flags = tcp[13]
        yield sec + frac / tsdiv, src, dst, sport, dport, flags


def main():
    pcap, xml, attacker, defender, spec = sys.argv[1:6]
    trapped = trapped_set(spec)
    SYN, RST, ACK = 0x02, 0x04, 0x10
    pk = sorted(packets(pcap))
    t0 = None
    probes = probes_before = 0
    replies_before = 0
    synack_after = rst_after = 0
    last_reply = None
    open_answered_after = set()
    for ts, src, dst, sport, dport, fl in pk:
        if src == attacker and dst == defender and fl & SYN and not fl & ACK:
            probes += 1
            if t0 is None:
                if dport in trapped:
                    t0 = ts
                else:
                    probes_before += 1
        elif src == defender and dst == attacker:
            if t0 is None:
                replies_before += 1
                continue
            if fl & SYN and fl & ACK:
                synack_after += 1
                open_answered_after.add(sport)
            elif fl & RST:
                rst_after += 1
            else:
                continue
            last_reply = ts
    window_ms = 0.0 if last_reply is None or t0 is None else (last_reply - t0) * 1e3

    states = {"open": 0, "closed": 0, "filtered": 0}
    try:
        root = ET.parse(xml).getroot()
        for host in root.iter("host"):
            for ep in host.iter("extraports"):
                st = ep.get("state", "")
                for k in states:
                    if st.startswith(k) or st.endswith(k):
                        states[k] += int(ep.get("count", "0"))
                        break
            for port in host.iter("port"):
                st = port.find("state").get("state", "")
                for k in states:
                    if st.startswith(k) or st.endswith(k):
                        states[k] += 1
                        break
        elapsed = root.find("runstats/finished").get("elapsed", "-")
    except (ET.ParseError, FileNotFoundError, AttributeError):
        elapsed = "-"
    print(
        f"probes={probes} probes_before_trap={probes_before} replies_before_trap={replies_before} "
        f"replies_after_trap={synack_after + rst_after} synack_after={synack_after} rst_after={rst_after} "
        f"open_ports_answered_after={len(open_answered_after)} window_ms={window_ms:.1f} "
        f"nmap_open={states['open']} nmap_closed={states['closed']} nmap_filtered={states['filtered']} "
        f"nmap_secs={elapsed} trapped_seen={'yes' if t0 is not None else 'no'}"
    )


if __name__ == "__main__":
    main()
