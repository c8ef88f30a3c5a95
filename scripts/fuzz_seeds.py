#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/fuzz_targets/*.rs) into OUTDIR/<target>/,
from the project's own test data (tests/data: capture files, conf/*.toml) and from
../shared/haka-pcaps when it is there. Run by scripts/fuzz.sh at each run (the seeds are
not committed: OUTDIR is gitignored). Standard library only.

Each seed is in the input format its target documents at its top (most start with a
control-length byte, 0 here: the target's default cuts)."""
import hashlib
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_CAPTURE = 256 * 1024  # larger captures (benchmarks) are skipped
PER_TARGET = 400


def captures():
    dirs = [os.path.join(ROOT, "tests", "data"), os.path.join(ROOT, "..", "shared", "haka-pcaps")]
    seen = set()
    for d in dirs:
        for base, _, files in os.walk(d):
            for f in sorted(files):
                if not f.endswith((".pcap", ".pcapng")):
                    continue
                p = os.path.join(base, f)
                if os.path.getsize(p) > MAX_CAPTURE:
                    continue
                b = open(p, "rb").read()
                h = hashlib.sha1(b).digest()
                if h not in seen:
                    seen.add(h)
                    yield b


def packets(cap):
    """(link type, frame) of a classic pcap; nothing for other formats."""
    if len(cap) < 24:
        return
    magic = struct.unpack("<I", cap[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        return
    link = struct.unpack(e + "I", cap[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(cap):
        n = struct.unpack(e + "I", cap[off + 8 : off + 12])[0]
        yield link, cap[off + 16 : off + 16 + n]
        off += 16 + n


def ip_of(link, frame):
    """The IP packet of a frame (Ethernet, possibly one VLAN tag; raw IP)."""
    if link == 1:
        t, off = struct.unpack(">H", frame[12:14])[0] if len(frame) >= 14 else 0, 14
        if t == 0x8100 and len(frame) >= 18:
            t, off = struct.unpack(">H", frame[16:18])[0], 18
        return frame[off:] if t in (0x0800, 0x86DD) else None
    if link in (101, 228, 229, 12, 14):
        return frame
    return None


def l4_of(ip):
    """(proto, src, dst, l4 bytes, is_fragment) of an IP packet, or None."""
    if len(ip) >= 20 and ip[0] >> 4 == 4:
        hl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        frag = struct.unpack(">H", ip[6:8])[0] & 0x3FFF
        return ip[9], ip[12:16], ip[16:20], ip[hl:total], frag != 0
    if len(ip) >= 40 and ip[0] >> 4 == 6:
        plen = struct.unpack(">H", ip[4:6])[0]
        return ip[6], ip[8:24], ip[24:40], ip[40 : 40 + plen], ip[6] == 44
    return None


def u16(n):
    return struct.pack(">H", n)


class Seeds:
    def __init__(self, out):
        self.out = out
        self.count = {}

    def add(self, target, data):
        if self.count.get(target, 0) >= PER_TARGET:
            return
        d = os.path.join(self.out, target)
        os.makedirs(d, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()
        path = os.path.join(d, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            self.count[target] = self.count.get(target, 0) + 1


def streams(frames):
    """TCP payload streams per (src, sport, dst, dport), in sequence order, duplicates out."""
    segs = {}
    for ip in frames:
        r = l4_of(ip)
        if not r or r[0] != 6 or r[4] or len(r[3]) < 20:
            continue
        _, src, dst, t, _ = r
        sport, dport, seq = struct.unpack(">HHI", t[:8])
        doff = (t[12] >> 4) * 4
        if t[doff:]:
            segs.setdefault((src, sport, dst, dport), {}).setdefault(seq, t[doff:])
    return {k: b"".join(v[s] for s in sorted(v)) for k, v in segs.items()}


def client_hello(sni, pieces=1):
    """A TLS 1.3-style ClientHello with SNI, ALPN and supported_versions, in `pieces` records."""
    ext = b""
    name = sni.encode()
    sn = b"\x00" + u16(len(name)) + name
    ext += u16(0) + u16(len(sn) + 2) + u16(len(sn)) + sn
    alpn = b"\x02h2\x08http/1.1"
    ext += u16(16) + u16(len(alpn) + 2) + u16(len(alpn)) + alpn
    ext += u16(43) + u16(5) + b"\x04\x03\x04\x03\x03"
    ext += u16(0x0A0A) + u16(0)  # GREASE
    body = b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32) + u16(6) + b"\x13\x01\x13\x02\xc0\x2f" + b"\x01\x00"
    body += u16(len(ext)) + ext
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    step = max(1, -(-len(hs) // pieces))
    return b"".join(b"\x16\x03\x01" + u16(len(hs[i : i + step])) + hs[i : i + step] for i in range(0, len(hs), step))


def main():
    out = sys.argv[1]
    s = Seeds(out)
    rnd = random.Random(13)
    frames = []
    for cap in captures():
        if len(cap) <= 64 * 1024:
            s.add("pcap", cap)
        for link, frame in packets(cap):
            ip = ip_of(link, frame)
            if ip is None:
                continue
            frames.append(ip)
            if link == 1:
                s.add("dissect", b"\x00" + frame)
                s.add("lua_fields", b"\x00" + frame)
            s.add("dissect", b"\x01" + ip)
            s.add("lua_fields", b"\x01" + ip)
    # a pcapng capture of a few of the frames (the reader's other format)
    def blk(t, body):
        body += bytes(-len(body) % 4)
        return struct.pack("<II", t, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    ng = blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + blk(1, struct.pack("<HHI", 101, 0, 65535))
    for ip in frames[:8]:
        ng += blk(6, struct.pack("<IIIII", 0, 0, 0, len(ip), len(ip)) + ip)
    s.add("pcap", ng)

    dns_q, dns_r = [], []
    for ip in frames:
        r = l4_of(ip)
        if not r:
            continue
        proto, _, _, l4, frag = r
        if frag:
            if ip[0] >> 4 == 4 and len(ip) <= 255:
                s.add("defrag", b"\x00" + u16(0) + bytes([0, 0, 0, len(ip)]) + ip)
            continue
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack(">HH", l4[:4])
            pay = l4[8:]
            if 53 in (sport, dport):
                s.add("dns_udp", pay)
                (dns_q if dport == 53 else dns_r).append(pay)
            s.add("defrag", b"\x03\x00\x10\x05" + u16(len(pay)) + pay)
        if proto == 6 and len(l4) >= 20:
            doff = (l4[12] >> 4) * 4
            pay = l4[doff:]
            if pay:
                ops = bytes(rnd.randrange(256) for _ in range(4 * rnd.randrange(1, 8)))
                s.add("tcp_edit", b"\x00" + u16(len(pay)) + pay + bytes([len(l4[20:doff])]) + l4[20:doff] + ops)
    for c in range(0, len(dns_q), 3):
        cl = b"".join(u16(len(m)) + m for m in dns_q[c : c + 3])
        sv = b"".join(u16(len(m)) + m for m in dns_r[c : c + 3])
        s.add("dns_tcp", b"\x00" + u16(len(cl)) + cl + sv)

    st = streams(frames)
    for (src, sport, dst, dport), data in st.items():
        if dport == 80 or sport == 80:
            if dport != 80:
                continue
            back = st.get((dst, dport, src, sport), b"")
            s.add("http_split", b"\x00" + u16(min(len(data), 65535)) + data[:65535] + back)
            for stream, resp in ((data, 0), (back, 1)):
                end = stream.find(b"\r\n\r\n")
                if end > 0:
                    s.add("http_head", b"\x03" + bytes([resp, 2, 3]) + stream[: end + 4])
        else:
            # any stream: the reassembler's known stream, cut in segments sent out of order
            data = data[:4096]
            ops = b""
            offs = list(range(0, len(data), 97))
            rnd.shuffle(offs)
            for o in offs:
                ops += bytes([0, o & 255, o >> 8, 150, 0, 0])
            ops += bytes([4, 0, 0, 0, 0, 255])
            s.add("tcp_reassembly", b"\x04" + bytes([200, 200, 1, 2]) + u16(len(data)) + data + ops)
    for sni, n in (("www.example.com", 1), ("a.b", 3), ("blocked.example.org", 40)):
        h = client_hello(sni, n)
        s.add("tls_hello", b"\x00" + h)
        s.add("tls_hello", b"\x02\x00\x04" + h)
        s.add("http_split", b"\x00" + u16(len(h)) + h)  # not HTTP: an error event either way
    for f in sorted(os.listdir(os.path.join(ROOT, "conf"))):
        if f.endswith(".toml"):
            s.add("config", open(os.path.join(ROOT, "conf", f), "rb").read())
    for t in ("dissect", "http_split", "http_head", "dns_udp", "dns_tcp", "tls_hello", "defrag",
              "tcp_reassembly", "tcp_edit", "pcap", "config", "lua_fields"):
        s.add(t, b"\x00")
    print(" ".join(f"{t}={n}" for t, n in sorted(s.count.items())))


if __name__ == "__main__":
    main()
