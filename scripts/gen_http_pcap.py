#!/usr/bin/env python3
"""Writes a pcap of complete HTTP/1.1 TCP sessions for the HTTP benchmark
(scripts/bench.sh, cases (d)-(f); with --irregular, case (i)).

Clients are 198.18.x.y, servers 198.19.x.y port 80 (RFC 2544 benchmarking
range only). Every session is a real TCP conversation: three-way handshake
(MSS option), requests and responses with proper seq/ack numbering, 1460-byte
segments, an ACK from the receiver every second segment and at the end of
each message, and a FIN/ACK teardown. The mix:
- keep-alive sessions (60%): 2-6 request/response pairs, the client closes
  (or, 30% of the time, the last request asks `Connection: close`);
- short sessions (40%): one request with `Connection: close`, the server closes;
- responses with Content-Length or `Transfer-Encoding: chunked`, bodies from
  0 bytes to ~60 KB (many segments); a few POSTs with a form body;
- varied URIs (some with `/admin`, `union select` percent- or plus-encoded),
  varied User-Agents (some `sqlmap/1.4`, `Nikto`), cookies, some 404/500.
Sessions overlap in time (with the defaults up to ~170 at once, 70 ms each
on average), packets are interleaved in timestamp order. IPv4 and TCP
checksums are valid. Deterministic: the same seed, session count and mode give
a byte-identical file (and without --irregular the file is the one earlier
versions wrote).

--irregular makes the traffic less regular, as captured from real stacks:
- TCP options: MSS, SACK-permitted and timestamps on the SYN and SYN/ACK, the
  timestamps option (NOP NOP TS, each end its own clock) on every later segment;
- out-of-order segments: in about 4% of the places where a message has a
  next segment, the two arrive swapped; the receiver answers the first to
  arrive with a duplicate ACK carrying a SACK block for it, then ACKs both;
- retransmissions: about 2% of data segments are sent again (a byte-identical
  copy, an RTT later);
- header names in lower case on 20% of requests and of responses;
- chunked responses on 50% of responses with a body (35% otherwise);
- `Server: nginx` (no version) on half the responses, the other half as usual.
Every message is still complete and in sequence once reassembled: an HTTP
rule sees each request and response exactly once (the summary line prints how
many request/response pairs the file holds).

  /usr/bin/python3 scripts/gen_http_pcap.py OUT.pcap [-n SESSIONS] [--seed S] [--irregular]

Pure Python (struct/array): the default 6000 sessions (~200k packets, ~140 MB)
take 2-4 s. net_pcap's infinite_rx copies the whole capture into the mbuf
pool, so keep the packet count under the benchmark's pool (262143 mbufs).
The replay loops: every session then starts again with the same 5-tuple and
sequence numbers, a new connection on a port just closed with FIN.
"""
import argparse
import array
import heapq
import os
import random
import struct
import sys

MSS = 1460
ETH_C = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"  # client -> server
ETH_S = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"  # server -> client
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def csum_sum(b):
    """16-bit one's-complement partial sum (not folded) of b."""
    if len(b) & 1:
        b += b"\0"
    a = array.array("H", b)
    if sys.byteorder == "little":
        a.byteswap()
    return sum(a)


def fold(s):
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class Endpoint:
    __slots__ = ("ip", "port", "seq", "ip_id", "eth", "ttl")

    def __init__(self, ip, port, seq, ip_id, eth, ttl):
        self.ip, self.port, self.seq, self.ip_id, self.eth, self.ttl = ip, port, seq, ip_id, eth, ttl


def segment(src, dst, flags, payload=b"", opts=b"", ack=None):
    """One Ethernet/IPv4/TCP frame from src to dst; advances src.seq and ip_id.
    ack: the acknowledgment number when it is not dst.seq (a duplicate ACK)."""
    thl = 20 + len(opts)
    tlen = 20 + thl + len(payload)
    if ack is None:
        ack = dst.seq if flags & ACK else 0
    tcp = struct.pack("!HHIIBBHHH", src.port, dst.port, src.seq, ack, (thl // 4) << 4, flags, 64240, 0, 0) + opts
    pseudo = src.ip + dst.ip + struct.pack("!HH", 6, thl + len(payload))
    c = fold(csum_sum(pseudo + tcp) + csum_sum(payload))
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tlen, src.ip_id, 0x4000, src.ttl, 6, 0, src.ip, dst.ip)
    ip = ip[:10] + struct.pack("!H", fold(csum_sum(ip))) + ip[12:]
    src.ip_id = (src.ip_id + 1) & 0xFFFF
    src.seq = (src.seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
    return src.eth + ip + tcp + payload


# ---- HTTP content -------------------------------------------------------------------------------

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu haka dpdk packet flow rule").split()
USER_AGENTS = (
    ["Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0"] * 6
    + ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"] * 6
    + ["Mozilla/5.0 (Macintosh; Intel Mac OS X 13_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Safari/605.1.15"] * 3
    + ["curl/7.88.1", "Wget/1.21.3", "python-requests/2.31.0", "Go-http-client/1.1"]
    + ["sqlmap/1.4#stable (http://sqlmap.org)", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)"]
)
SQLI = ("1%20union%20select%20username,password%20from%20users--", "1+UNION+SELECT+null,version()--",
        "-1%20Union%20Select%201,2,3")


def make_uri(rng):
    r = rng.random()
    if r < 0.03:
        return rng.choice(("/admin", "/admin/login.php", "/wp-admin/admin-ajax.php", "/site/admin/config?x=%d" % rng.randrange(100)))
    if r < 0.06:
        return "/products.php?id=" + rng.choice(SQLI)
    if r < 0.25:
        return "/static/js/app.%05x.js" % rng.randrange(1 << 20)
    if r < 0.45:
        return "/images/photo%d.jpg" % rng.randrange(5000)
    if r < 0.60:
        return "/api/v1/users/%d?fields=name,email&lang=%s" % (rng.randrange(100000), rng.choice(("en", "fr", "de")))
    if r < 0.75:
        return "/search?q=%s+%s&page=%d" % (rng.choice(WORDS), rng.choice(WORDS), rng.randrange(1, 20))
    if r < 0.85:
        return "/"
    return "/%s/%s.html" % (rng.choice(WORDS), rng.choice(WORDS))


def content_type(uri):
    if uri.endswith(".js"):
        return "application/javascript"
    if uri.endswith(".jpg"):
        return "image/jpeg"
    if uri.startswith("/api/"):
        return "application/json"
    return "text/html; charset=utf-8"


def body_size(rng):
    r = rng.random()
    if r < 0.15:
        return 0
    if r < 0.50:
        return rng.randrange(1, 1400)
    if r < 0.85:
        return rng.randrange(1400, 12000)
    return rng.randrange(12000, 60000)


BODY_POOL = None


def body_bytes(rng, n):
    off = rng.randrange(len(BODY_POOL) - n)
    return BODY_POOL[off:off + n]


# --irregular: set by main(); every extra random draw is taken only in that
# mode, so the regular capture stays byte-identical to earlier versions.
IRREGULAR = False
EXCHANGES = 0  # request/response pairs written (printed at the end)


def lower_names(lines):
    """Header names in lower case (as HTTP/2 gateways and some clients write them)."""
    return [lines[0]] + [l.split(": ", 1)[0].lower() + ": " + l.split(": ", 1)[1] for l in lines[1:]]


def make_request(rng, host, ua, cookie, close):
    uri = make_uri(rng)
    post = rng.random() < 0.08
    lines = ["%s %s HTTP/1.1" % ("POST" if post else "GET", uri), "Host: " + host, "User-Agent: " + ua,
             "Accept: */*", "Accept-Encoding: gzip, deflate"]
    if cookie:
        lines.append("Cookie: " + cookie)
    if rng.random() < 0.3:
        lines.append("Referer: http://%s/%s.html" % (host, rng.choice(WORDS)))
    body = b""
    if post:
        body = ("user=%s&comment=" % rng.choice(WORDS)).encode() + body_bytes(rng, rng.randrange(50, 3000))
        lines += ["Content-Type: application/x-www-form-urlencoded", "Content-Length: %d" % len(body)]
    lines.append("Connection: close" if close else "Connection: keep-alive")
    if IRREGULAR and rng.random() < 0.2:
        lines = lower_names(lines)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, uri


def make_response(rng, uri, close):
    r = rng.random()
    status, reason = (200, "OK") if r < 0.90 else (404, "Not Found") if r < 0.97 else (500, "Internal Server Error")
    body = body_bytes(rng, body_size(rng) if status == 200 else rng.randrange(100, 600))
    lines = ["HTTP/1.1 %d %s" % (status, reason), "Date: Tue, 14 Nov 2023 22:13:20 GMT",
             "Server: " + ("nginx" if IRREGULAR and rng.random() < 0.5
                           else rng.choice(("nginx/1.22.1", "Apache/2.4.57 (Debian)", "lighttpd/1.4.69"))),
             "Content-Type: " + content_type(uri)]
    if rng.random() < 0.2:
        lines.append("Set-Cookie: sid=%016x; Path=/; HttpOnly" % rng.getrandbits(64))
    if rng.random() < (0.5 if IRREGULAR else 0.35) and body:
        lines.append("Transfer-Encoding: chunked")
        parts, i = [], 0
        while i < len(body):
            n = min(rng.randrange(200, 8192), len(body) - i)
            parts.append(b"%x\r\n" % n + body[i:i + n] + b"\r\n")
            i += n
        payload = b"".join(parts) + b"0\r\n\r\n"
    else:
        lines.append("Content-Length: %d" % len(body))
        payload = body
    lines.append("Connection: close" if close else "Connection: keep-alive")
    if IRREGULAR and rng.random() < 0.2:
        lines = lower_names(lines)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# ---- sessions -----------------------------------------------------------------------------------

def session(i, t0, rng):
    """Yields (time_us, frame) for session i starting at t0 (microseconds)."""
    rtt = rng.randrange(200, 20000)  # client <-> server round trip, us
    cli = Endpoint(bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF]), 1024 + (i * 7919) % 64000,
                   rng.getrandbits(32), rng.getrandbits(16), ETH_C, 64)
    srv = Endpoint(bytes([198, 19, rng.randrange(0, 4), rng.randrange(1, 255)]), 80,
                   rng.getrandbits(32), rng.getrandbits(16), ETH_S, 63)
    host = "www%d.example.com" % (srv.ip[3] % 16)
    ua = rng.choice(USER_AGENTS)
    cookie = "sid=%016x; lang=en" % rng.getrandbits(64) if rng.random() < 0.6 else ""
    keepalive = rng.random() < 0.6
    n_req = rng.randrange(2, 7) if keepalive else 1
    t = t0
    mss = struct.pack("!BBH", 2, 4, MSS)
    irr = IRREGULAR
    if irr:  # each end's timestamp clock (ms), from a random origin
        ts_origin = {id(cli): rng.getrandbits(32), id(srv): rng.getrandbits(32)}

    def opts(a, b, extra=b""):
        """TCP options of a segment from a to b: none, or (--irregular) the
        timestamps option (NOP NOP TS) followed by extra."""
        if not irr:
            return extra
        ms = (t - t0) // 1000
        ecr = (ts_origin[id(b)] + max(ms - rtt // 2000, 0)) & 0xFFFFFFFF
        return b"\x01\x01\x08\x0a" + struct.pack("!II", (ts_origin[id(a)] + ms) & 0xFFFFFFFF, ecr) + extra

    def seg(a, b, flags, payload=b"", extra=b"", ack=None):
        return segment(a, b, flags, payload, opts(a, b, extra), ack)

    if irr:  # SYN: MSS, SACK permitted, timestamps (16 bytes); no window scale
        syn_opts = mss + b"\x04\x02\x08\x0a" + struct.pack("!II", ts_origin[id(cli)], 0)
        yield t, segment(cli, srv, SYN, opts=syn_opts)
        t += rtt // 2
        synack_opts = mss + b"\x04\x02\x08\x0a" + struct.pack("!II", ts_origin[id(srv)], ts_origin[id(cli)])
        yield t, segment(srv, cli, SYN | ACK, opts=synack_opts)
    else:
        yield t, segment(cli, srv, SYN, opts=mss)
        t += rtt // 2
        yield t, segment(srv, cli, SYN | ACK, opts=mss)
    t += rtt // 2
    yield t, seg(cli, srv, ACK)

    def send(a, b, data, ack_last):
        """a sends data in MSS segments; b ACKs every second one, and the last
        when ack_last (a response; a request's end is ACKed by the response). --irregular: now and then two adjacent segments arrive
        swapped (b answers the first with a duplicate ACK carrying a SACK
        block, then ACKs both), or a segment is sent twice (a byte-identical
        copy, as a retransmission after a lost ACK)."""
        nonlocal t
        segs = [data[k:k + MSS] for k in range(0, len(data), MSS)] or [b""]
        n = len(segs)
        k = 0
        while k < n:
            t += 20 + (len(segs[k]) // 10 if ack_last else 0)  # serialisation-ish spacing
            last = k == n - 1
            if irr and not last and rng.random() < 0.04:
                start = a.seq
                first = seg(a, b, ACK, segs[k])
                mid = a.seq
                t += 20 + (len(segs[k + 1]) // 10 if ack_last else 0)
                second = seg(a, b, ACK | (PSH if k + 1 == n - 1 else 0), segs[k + 1])
                yield t, second
                t += 10
                sack = b"\x01\x01\x05\x0a" + struct.pack("!II", mid, a.seq)
                yield t, seg(b, a, ACK, extra=sack, ack=start)
                t += 20
                yield t, first
                t += 10
                yield t, seg(b, a, ACK)
                k += 2
                continue
            f = seg(a, b, ACK | (PSH if last else 0), segs[k])
            yield t, f
            if irr and rng.random() < 0.02:
                t += rtt + 200
                yield t, f
            if (last and ack_last) or (not last and k % 2 == 1):
                t += 10
                yield t, seg(b, a, ACK)
            k += 1

    global EXCHANGES
    EXCHANGES += n_req
    for r in range(n_req):
        close = not keepalive or (r == n_req - 1 and rng.random() < 0.3)
        req, uri = make_request(rng, host, ua, cookie, close)
        t += rng.randrange(100, 5000)  # think time
        yield from send(cli, srv, req, False)  # the response ACKs the request's end
        t += rtt // 2 + rng.randrange(50, 2000)  # server time
        resp = make_response(rng, uri, close)
        yield from send(srv, cli, resp, True)
        t += rtt // 2
        if close:  # the server closes after its response; the client follows
            yield t, seg(srv, cli, FIN | ACK)
            t += rtt // 2
            yield t, seg(cli, srv, FIN | ACK)
            t += rtt // 2
            yield t, seg(srv, cli, ACK)
            return
    t += rng.randrange(1000, 50000)  # keep-alive idle, then the client closes
    yield t, seg(cli, srv, FIN | ACK)
    t += rtt // 2
    yield t, seg(srv, cli, FIN | ACK)
    t += rtt // 2
    yield t, seg(cli, srv, ACK)


def main():
    global BODY_POOL, IRREGULAR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output pcap path")
    ap.add_argument("-n", "--sessions", type=int, default=6000, help="number of TCP sessions (default 6000, ~200k packets)")
    ap.add_argument("--seed", type=int, default=4, help="random seed (default 4)")
    ap.add_argument("--rate", type=int, default=2000, help="new sessions per second of capture time (default 2000)")
    ap.add_argument("--irregular", action="store_true",
                    help="less regular traffic: TCP timestamps and SACK, out-of-order and retransmitted segments, "
                         "lower-case header names, more chunked responses, `Server: nginx` on half the responses")
    a = ap.parse_args()
    IRREGULAR = a.irregular
    if a.sessions < 1 or a.sessions > 65536:
        ap.error("--sessions must be in 1..65536 (one client address per session)")
    rng = random.Random(a.seed)
    BODY_POOL = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 <>/=\"\n") for _ in range(200000))

    # Session start times (Poisson arrivals), each session with its own RNG so
    # the interleaving does not change the content.
    starts, t = [], 1_700_000_000 * 1_000_000
    for i in range(a.sessions):
        t += int(rng.expovariate(a.rate) * 1e6) + 1
        starts.append((t, i, rng.getrandbits(64)))

    heap, nxt = [], 0  # (time, tie, frame, generator)
    packets = nbytes = 0
    tie = 0
    with open(a.out + ".tmp", "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while heap or nxt < len(starts):
            # Start every session whose first packet comes before the earliest pending one.
            while nxt < len(starts) and (not heap or starts[nxt][0] <= heap[0][0]):
                t0, i, s = starts[nxt]
                nxt += 1
                g = session(i, t0, random.Random(s))
                ts, f = next(g)
                tie += 1
                heapq.heappush(heap, (ts, tie, f, g))
            ts, _, f, g = heapq.heappop(heap)
            out.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(f), len(f)))
            out.write(f)
            packets += 1
            nbytes += len(f)
            nx = next(g, None)
            if nx is not None:
                tie += 1
                # A session's times only grow: the output is in timestamp order.
                heapq.heappush(heap, (nx[0], tie, nx[1], g))
    os.replace(a.out + ".tmp", a.out)
    print("gen_http_pcap: %s: %d sessions%s, %d requests and responses, %d packets, %d bytes (%.0f bytes/packet)"
          % (a.out, a.sessions, " (irregular)" if a.irregular else "", EXCHANGES, packets, nbytes, nbytes / max(packets, 1)))


if __name__ == "__main__":
    main()
