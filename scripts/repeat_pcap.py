#!/usr/bin/env python3
"""Writes a large capture by repeating a classic pcap until OUT reaches SIZE_MB: each copy's
timestamps are shifted past the previous copy's (plus a second), so time only moves forward
and every TCP session of the input is replayed again, a new connection on a closed port.
For hakapcap's scale test (tests/hakapcap_scale.sh). Streams: memory holds one copy.

  /usr/bin/python3 scripts/repeat_pcap.py IN.pcap OUT.pcap SIZE_MB
"""
import struct
import sys


def main():
    src, dst, size_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open(src, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        sys.exit(f"repeat_pcap: {src}: not a little-endian classic pcap")
    scale = 1_000_000_000 if magic == 0xA1B23C4D else 1_000_000
    records, off = [], 24
    while off < len(data):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", data, off)
        records.append((sec * scale + frac, data[off + 8:off + 16 + caplen]))
        off += 16 + caplen
    if not records:
        sys.exit(f"repeat_pcap: {src}: no packets")
    span = records[-1][0] - records[0][0] + scale
    target = int(size_mb * 1e6)
    written, copies, packets = 24, 0, 0
    with open(dst, "wb") as out:
        out.write(data[:24])
        while written < target:
            shift = copies * span
            chunk = b"".join(struct.pack("<II", *divmod(t + shift, scale)) + rest for t, rest in records)
            out.write(chunk)
            written += len(chunk)
            copies += 1
            packets += len(records)
    print(f"repeat_pcap: {dst}: {copies} copies, {packets} packets, {written} bytes")


if __name__ == "__main__":
    main()
