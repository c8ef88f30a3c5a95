#!/usr/bin/env python3
"""Writes a pcap of Modbus/TCP sessions (port 502) for the Lua dissector
benchmark (scripts/bench.sh, case (g)) and the Modbus sample's tests.

Clients (SCADA masters, HMIs) are 198.18.x.y, servers (PLCs, gateways)
198.19.x.y port 502 (RFC 2544 benchmarking range only). Every session is a
real TCP conversation (helpers of gen_http_pcap.py: handshake, seq/ack,
valid checksums, FIN/ACK teardown) carrying polling transactions: a request
ADU from the client, its response from the server (which acknowledges it),
and a pure ACK from the client every few responses. The mix per request:
- read holding registers (3) 48%, read input registers (4) 15%, read coils (1)
  and discrete inputs (2) 12%, write single register (6) 10%, write multiple
  registers (16) 8%, write single coil (5) 4%, write multiple coils (15) 3%,
  reads and writes of 1 to the maximum quantity (responses up to 260 bytes);
- about 2% of responses are exceptions (illegal data address, 0x02);
- 4% of frames are split over two segments, 6% of the time two or three
  transactions are pipelined (their requests in one segment, then their
  responses in one segment);
- rare policy hits for modbus_rules.lua: about 1 session in 200 writes a
  protected register (1000-1999), 1 in 300 asks an unknown function code (8,
  diagnostics, answered by exception 0x01), 1 in 500 addresses a unit id that
  is not allowed (> 16).
Sessions overlap in time and their packets are interleaved in timestamp
order. Deterministic: the same seed and counts give a byte-identical file.

  /usr/bin/python3 scripts/gen_modbus_pcap.py OUT.pcap [-n SESSIONS] [-t TRANSACTIONS] [--seed S]
"""
import argparse
import heapq
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_http_pcap import ETH_C, ETH_S, FIN, SYN, PSH, ACK, MSS, Endpoint, segment  # noqa: E402

PROTECTED = (1000, 1999)


def mbap(tid, unit, pdu):
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def free_address(rng, span):
    """A register/coil address outside the protected range for `span` items."""
    while True:
        a = rng.randrange(0, 4000 - span)
        if a + span - 1 < PROTECTED[0] or a > PROTECTED[1]:
            return a


def transaction(rng, tid, unit, special):
    """(request ADU, response ADU) of one transaction; special: None, 'protected', 'unknown'."""
    if special == "unknown":
        sub = rng.randrange(0, 20)
        req = mbap(tid, unit, struct.pack("!BHH", 8, sub, 0xA537))
        return req, mbap(tid, unit, struct.pack("!BB", 8 | 0x80, 0x01))
    if special == "protected":
        a = rng.randrange(PROTECTED[0], PROTECTED[1] + 1)
        return (mbap(tid, unit, struct.pack("!BHH", 6, a, rng.randrange(0, 65536))),
                mbap(tid, unit, struct.pack("!BHH", 6, a, 0)))
    r = rng.random()
    exc = rng.random() < 0.02
    if r < 0.75:  # reads
        fc = 3 if r < 0.48 else 4 if r < 0.63 else rng.choice((1, 2))
        if fc in (3, 4):
            q = rng.choice((1, 2, 4, 8, 10, 16, 32, 64, 125)) if rng.random() < 0.8 else rng.randrange(1, 126)
            n = 2 * q
        else:
            q = rng.randrange(1, 2001)
            n = (q + 7) // 8
        a = free_address(rng, q if fc in (3, 4) else 1)
        req = mbap(tid, unit, struct.pack("!BHH", fc, a, q))
        if exc:
            return req, mbap(tid, unit, struct.pack("!BB", fc | 0x80, 0x02))
        data = bytes(rng.getrandbits(8) for _ in range(n))
        return req, mbap(tid, unit, struct.pack("!BB", fc, n) + data)
    if r < 0.85 or r >= 0.97:  # write single register (6) or coil (5)
        fc = 6 if r < 0.85 else 5
        a = free_address(rng, 1)
        v = rng.randrange(0, 65536) if fc == 6 else rng.choice((0x0000, 0xFF00))
        req = mbap(tid, unit, struct.pack("!BHH", fc, a, v))
        if exc:
            return req, mbap(tid, unit, struct.pack("!BB", fc | 0x80, 0x02))
        return req, req
    # write multiple registers (16) or coils (15)
    fc = 16 if r < 0.93 else 15
    if fc == 16:
        q = rng.randrange(1, 124)
        n = 2 * q
    else:
        q = rng.randrange(1, 1969)
        n = (q + 7) // 8
    a = free_address(rng, q)
    data = bytes(rng.getrandbits(8) for _ in range(n))
    req = mbap(tid, unit, struct.pack("!BHHB", fc, a, q, n) + data)
    if exc:
        return req, mbap(tid, unit, struct.pack("!BB", fc | 0x80, 0x02))
    return req, mbap(tid, unit, struct.pack("!BHH", fc, a, q))


def session(i, t0, rng, n_tx):
    """Yields (time_us, frame) for session i starting at t0 (microseconds)."""
    rtt = rng.randrange(100, 5000)
    cli = Endpoint(bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF]), 1024 + (i * 7919) % 64000,
                   rng.getrandbits(32), rng.getrandbits(16), ETH_C, 64)
    srv = Endpoint(bytes([198, 19, rng.randrange(0, 4), rng.randrange(1, 255)]), 502,
                   rng.getrandbits(32), rng.getrandbits(16), ETH_S, 63)
    unit = rng.randrange(1, 17)
    special, special_at = None, -1
    x = rng.random()
    if x < 1 / 200:
        special = "protected"
    elif x < 1 / 200 + 1 / 300:
        special = "unknown"
    elif x < 1 / 200 + 1 / 300 + 1 / 500:
        unit = rng.randrange(17, 248)
    if special:
        special_at = rng.randrange(0, n_tx)
    t = t0
    mss = struct.pack("!BBH", 2, 4, MSS)
    yield t, segment(cli, srv, SYN, opts=mss)
    t += rtt // 2
    yield t, segment(srv, cli, SYN | ACK, opts=mss)
    t += rtt // 2
    yield t, segment(cli, srv, ACK)

    def send(a, b, data):
        """a sends data in one segment, or in two (a frame split) 4% of the time."""
        nonlocal t
        if len(data) > 2 and rng.random() < 0.04:
            cut = rng.randrange(1, len(data))
            yield t, segment(a, b, ACK, data[:cut])
            t += 15
            data = data[cut:]
        yield t, segment(a, b, ACK | PSH, data)

    tid = rng.getrandbits(16)
    k = 0
    since_ack = 0
    while k < n_tx:
        t += rng.randrange(200, 3000)  # polling interval
        batch = rng.randrange(2, 4) if rng.random() < 0.06 else 1
        batch = min(batch, n_tx - k)
        reqs, resps = [], []
        for _ in range(batch):
            sp = special if k == special_at else None
            q, r = transaction(rng, tid, unit, sp)
            reqs.append(q)
            resps.append(r)
            tid = (tid + 1) & 0xFFFF
            k += 1
        yield from send(cli, srv, b"".join(reqs))
        t += rtt // 2 + rng.randrange(50, 500)  # the PLC's scan time
        yield from send(srv, cli, b"".join(resps))
        t += rtt // 2
        since_ack += 1
        if since_ack >= 3 or k == n_tx:  # the client's delayed ACK
            since_ack = 0
            t += 40
            yield t, segment(cli, srv, ACK)
    t += rng.randrange(1000, 20000)
    yield t, segment(cli, srv, FIN | ACK)
    t += rtt // 2
    yield t, segment(srv, cli, FIN | ACK)
    t += rtt // 2
    yield t, segment(cli, srv, ACK)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output pcap path")
    ap.add_argument("-n", "--sessions", type=int, default=2000, help="TCP sessions (default 2000)")
    ap.add_argument("-t", "--transactions", type=int, default=40,
                    help="transactions per session on average (default 40: ~200k packets with 2000 sessions)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--rate", type=int, default=1000, help="new sessions per second of capture time (default 1000)")
    a = ap.parse_args()
    if a.sessions < 1 or a.sessions > 65536:
        ap.error("--sessions must be in 1..65536 (one client address per session)")
    if a.transactions < 1:
        ap.error("--transactions must be at least 1")
    rng = random.Random(a.seed)
    starts, t = [], 1_700_000_000 * 1_000_000
    for i in range(a.sessions):
        t += int(rng.expovariate(a.rate) * 1e6) + 1
        n_tx = max(1, int(a.transactions * rng.uniform(0.5, 1.5)))
        starts.append((t, i, rng.getrandbits(64), n_tx))

    heap, nxt = [], 0
    packets = nbytes = tie = 0
    with open(a.out + ".tmp", "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while heap or nxt < len(starts):
            while nxt < len(starts) and (not heap or starts[nxt][0] <= heap[0][0]):
                t0, i, s, n_tx = starts[nxt]
                nxt += 1
                g = session(i, t0, random.Random(s), n_tx)
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
                heapq.heappush(heap, (nx[0], tie, nx[1], g))
    os.replace(a.out + ".tmp", a.out)
    print("gen_modbus_pcap: %s: %d sessions, %d packets, %d bytes (%.0f bytes/packet)"
          % (a.out, a.sessions, packets, nbytes, nbytes / max(packets, 1)))


if __name__ == "__main__":
    main()
