#!/usr/bin/env python3
"""Writes a capture of hostile traffic for the flood tests (tests/floods.sh).

usage: hostile_pcap.py CASE SCALE OUT.pcap

CASE is one of the names in CASES below; SCALE multiplies its size (0.1 for the
10% run). Addresses are in 198.18.0.0/15, packets are Ethernet/IPv4 with valid
checksums, timestamps advance 10 us per packet. Only the standard library is used
(fast enough for a few hundred thousand packets)."""
import random
import struct
import sys

CLIENT_NET = (198, 18)
SERVER = bytes([198, 19, 0, 2])
MAC_C = bytes([2, 0, 0, 0, 0, 1])
MAC_S = bytes([2, 0, 0, 0, 0, 2])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return MAC_S + MAC_C + b"\x08\x00" + h + payload


def l4_csum(src, dst, proto, seg):
    return csum(src + dst + struct.pack("!BBH", 0, proto, len(seg)) + seg)


def tcp(src, dst, sport, dport, seq, ack, flags, data=b""):
    t = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0) + data
    c = l4_csum(src, dst, 6, t)
    t = t[:16] + struct.pack("!H", c) + t[18:]
    return ipv4(src, dst, 6, t)


def udp(src, dst, sport, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    c = l4_csum(src, dst, 17, u) or 0xFFFF
    u = u[:6] + struct.pack("!H", c) + u[8:]
    return ipv4(src, dst, 17, u)


SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def client(i):
    return bytes([CLIENT_NET[0], CLIENT_NET[1], (i >> 8) & 0xFF, i & 0xFF])


def handshake(c, cport, sport, isn_c=1000, isn_s=5000):
    return [
        tcp(c, SERVER, cport, sport, isn_c, 0, SYN),
        tcp(SERVER, c, sport, cport, isn_s, isn_c + 1, SYN | ACK),
        tcp(c, SERVER, cport, sport, isn_c + 1, isn_s + 1, ACK),
    ]


def segments(c, cport, sport, data, mss, seq=1001, ack=5001):
    out = []
    for off in range(0, len(data), mss):
        out.append(tcp(c, SERVER, cport, sport, seq + off, ack, PSH | ACK, data[off:off + mss]))
    return out


def syn_flood(n):
    rnd = random.Random(1)
    return [tcp(client(rnd.randrange(65536)), SERVER, rnd.randrange(1024, 65536), 80, rnd.randrange(1 << 32), 0, SYN)
            for _ in range(n)]


def fragment_flood(n):
    # first fragments of datagrams that never complete
    out = []
    for i in range(n):
        payload = struct.pack("!HHHH", 40000 + i % 1000, 53, 1480, 0) + b"x" * 1472
        out.append(ipv4(client(i % 4096), SERVER, 17, payload, ident=i & 0xFFFF, frag=0x2000))
    return out


def far_out_of_order(n):
    # connections whose segments all land far ahead of the next expected byte
    out = []
    for i in range(max(1, n // 24)):
        c, cp = client(i), 20000 + i % 40000
        out += handshake(c, cp, 80)
        for k in range(20):
            out.append(tcp(c, SERVER, cp, 80, 1001 + 100000 + k * 5000, 5001, PSH | ACK, b"o" * 1400))
    return out


def http_header_bomb(n):
    # heads that never end: 60 KB of header lines per connection
    line = b"X-Pad: " + b"a" * 990 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: lab\r\n" + line * 60
    out = []
    per = 3 + (len(head) + 1399) // 1400
    for i in range(max(1, n // per)):
        c, cp = client(i), 20000 + i % 40000
        out += handshake(c, cp, 80)
        out += segments(c, cp, 80, head, 1400)
    return out


def http_pipelining(n):
    # one connection, n pipelined requests, never answered
    c, cp = client(1), 33333
    out = handshake(c, cp, 80)
    req = b"GET /p HTTP/1.1\r\nHost: lab\r\n\r\n"
    per = 1400 // len(req)
    seq = 1001
    for _ in range(max(1, n // per)):
        data = req * per
        out.append(tcp(c, SERVER, cp, 80, seq, 5001, PSH | ACK, data))
        seq += len(data)
    return out


def dns_name(labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\0"


def dns_compression_loops(n):
    out = []
    for i in range(n):
        # question name: a label then a pointer to itself (offset 12)
        q = b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1)
        msg = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + q
        out.append(udp(client(i % 4096), SERVER, 30000 + i % 30000, 53, msg))
    return out


def dns_many_questions(n):
    # 256 questions each pointing at the first one's name
    first = dns_name([b"victim", b"example"]) + struct.pack("!HH", 1, 1)
    rest = (b"\xc0\x0c" + struct.pack("!HH", 1, 1)) * 255
    out = []
    for i in range(n):
        msg = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 256, 0, 0, 0) + first + rest
        out.append(udp(client(i % 4096), SERVER, 30000 + i % 30000, 53, msg))
    return out


def tls_one_byte_hellos(n):
    # ClientHellos of ~1.5 KB (a padding extension) sent one byte per segment
    body = b"\x03\x03" + b"r" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    sni = b"blocked.example"
    ext_sni = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    ext_pad = struct.pack("!HH", 21, 1400) + b"\0" * 1400
    exts = ext_sni + ext_pad
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    rec = b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
    out = []
    per = 3 + len(rec)
    for i in range(max(1, n // per)):
        c, cp = client(i), 20000 + i % 40000
        out += handshake(c, cp, 443)
        out += segments(c, cp, 443, rec, 1)
    return out


def plain_http(n):
    # short HTTP exchanges (for the rule and alert floods)
    out = []
    req = b"GET /index.html HTTP/1.1\r\nHost: lab\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    for i in range(max(1, n // 8)):
        c, cp = client(i), 20000 + i % 40000
        out += handshake(c, cp, 80)
        out.append(tcp(c, SERVER, cp, 80, 1001, 5001, PSH | ACK, req))
        out.append(tcp(SERVER, c, 80, cp, 5001, 1001 + len(req), PSH | ACK, resp))
        out.append(tcp(c, SERVER, cp, 80, 1001 + len(req), 5001 + len(resp), FIN | ACK))
        out.append(tcp(SERVER, c, 80, cp, 5001 + len(resp), 1002 + len(req), FIN | ACK))
        out.append(tcp(c, SERVER, cp, 80, 1002 + len(req), 5002 + len(resp), ACK))
    return out


CASES = {
    "syn_flood": (syn_flood, 100000),
    "fragment_flood": (fragment_flood, 50000),
    "far_out_of_order": (far_out_of_order, 50000),
    "http_header_bomb": (http_header_bomb, 60000),
    "http_pipelining": (http_pipelining, 30000),
    "dns_compression_loops": (dns_compression_loops, 50000),
    "dns_many_questions": (dns_many_questions, 10000),
    "tls_one_byte_hellos": (tls_one_byte_hellos, 60000),
    "plain_http": (plain_http, 100000),
}


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t = 1_700_000_000 * 1_000_000
        for fr in frames:
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(fr), len(fr)))
            f.write(fr)
            t += 10


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in CASES:
        sys.exit("usage: hostile_pcap.py {%s} SCALE OUT.pcap" % "|".join(CASES))
    gen, n = CASES[sys.argv[1]]
    frames = gen(max(1, int(n * float(sys.argv[2]))))
    write_pcap(sys.argv[3], frames)
    print(len(frames))


if __name__ == "__main__":
    main()
