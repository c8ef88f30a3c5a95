#!/usr/bin/env python3
"""Writes a pcap of N concurrent flows (one 60-byte Ether/IPv4/TCP-or-UDP
frame per flow, alternating TCP/UDP, addresses from 198.18.0.0/15) for the
benchmark replay: with infinite_rx every packet of the loop hits a
different flow, as in a busy link. Plain struct: fast, no dependencies."""
import struct
import sys


def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(i):
    src = bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF])
    dst = bytes([198, 19, (i >> 12) & 0x0F, (i * 7) & 0xFF])
    sport, dport = 1024 + (i % 60000), 80 + (i % 16)
    if i % 2 == 0:
        proto, l4 = 6, struct.pack("!HHIIBBHHH", sport, dport, i, 0, 0x50, 0x10, 0xFFFF, 0, 0)
    else:
        proto, l4 = 17, struct.pack("!HHHH", sport, dport, 8 + 12, 0) + b"\0" * 12
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), i & 0xFFFF, 0, 64, proto, 0, src, dst))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    f = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes(ip) + l4
    return f + b"\0" * max(0, 60 - len(f))


def main():
    # OUT [N] [--part I/K]: only the flows i with i % K == I (one capture per rx queue
    # of a multi-worker replay, each flow on one queue: scripts/bench.sh case (h))
    args = sys.argv[1:]
    part, parts = 0, 1
    if "--part" in args:
        k = args.index("--part")
        part, parts = (int(x) for x in args[k + 1].split("/"))
        del args[k : k + 2]
        if not 0 <= part < parts:
            sys.exit("gen_flows_pcap.py: --part I/K needs 0 <= I < K")
    path, n = args[0], int(args[1]) if len(args) > 1 else 65536
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(part, n, parts):
            f = frame(i)
            out.write(struct.pack("<IIII", 1700000000, i % 1000000, len(f), len(f)) + f)


if __name__ == "__main__":
    main()
