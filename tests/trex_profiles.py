"""Loads the TRex profiles of scripts/trex with TRex's own client library (PyPI
lbr-trex-client) and checks what they make (tests/trex.sh runs this, then replays the
captures it writes through hakapcap):

- stl_haka.py: the streams TRex builds (sizes, rates, imix ratio); their field-engine
  program (tuple generator, writes, IPv4 checksum fix) is run here as TRex's server runs
  it, over the library's base packets, to count the flows and write the packets a port
  would send to a pcap: imix.pcap, flood.pcap;
- astf_http.py: the profile compiles to TRex's JSON with the expected HTTP programs,
  address ranges and port.

usage: /opt/haka-trex-venv/bin/python tests/trex_profiles.py OUT_DIR
"""
import base64
import json
import os
import struct
import sys

import lbr_trex_client  # noqa: F401  (puts TRex's trex.* packages and its scapy on sys.path)
from trex.stl.api import STLProfile
from trex.astf.api import ASTFProfile
from scapy.layers.l2 import Ether
from scapy.layers.inet import IP, UDP

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILES = os.path.join(HERE, "..", "scripts", "trex")
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit("FAIL trex_profiles: " + what)
    checks += 1


def run_vm(stream_json, count):
    """The packets a stream sends, its field engine run as TRex runs it (the instructions
    these profiles use: tuple_flow_var, write_flow_var, fix_checksum_ipv4)."""
    base = base64.b64decode(stream_json["packet"]["binary"])
    ins = stream_json["vm"]["instructions"]
    out = []
    for k in range(count):
        pkt = bytearray(base)
        values = {}
        for i in ins:
            t = i["type"]
            if t == "tuple_flow_var":
                n_ip = i["ip_max"] - i["ip_min"] + 1
                flow = k % i["limit_flows"] if i["limit_flows"] else k
                values[i["name"] + ".ip"] = (i["ip_min"] + flow % n_ip, 4)
                values[i["name"] + ".port"] = (i["port_min"] + (flow // n_ip) % (i["port_max"] - i["port_min"] + 1), 2)
            elif t == "write_flow_var":
                v, size = values[i["name"]]
                v += i["add_value"]
                pkt[i["pkt_offset"]:i["pkt_offset"] + size] = v.to_bytes(size, "big" if i["is_big_endian"] else "little")
            elif t == "fix_checksum_ipv4":
                o = i["pkt_offset"]
                ihl = (pkt[o] & 0x0F) * 4
                pkt[o + 10:o + 12] = b"\0\0"
                s = sum(struct.unpack("!%dH" % (ihl // 2), bytes(pkt[o:o + ihl])))
                while s >> 16:
                    s = (s & 0xFFFF) + (s >> 16)
                pkt[o + 10:o + 12] = struct.pack("!H", ~s & 0xFFFF)
            else:
                raise SystemExit("FAIL trex_profiles: field engine instruction %s not emulated" % t)
        out.append(bytes(pkt))
    return out


def write_pcap(path, packets):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, p in enumerate(packets):
            us = n * 10  # 100 kpps
            f.write(struct.pack("<IIII", 1700000000 + us // 1000000, us % 1000000, len(p), len(p)) + p)


def check_udp(p, size, flows_seen):
    e = Ether(p)
    check(len(p) == size and IP in e and UDP in e, "packet of %d bytes, not a %d-byte UDP/IPv4 frame" % (len(p), size))
    ip = e[IP]
    ip2 = IP(bytes(ip))
    del ip2.chksum  # (scapy computes it again)
    check(IP(bytes(ip2)).chksum == ip.chksum, "IPv4 checksum not fixed by the field engine")
    check(ip.src.startswith("198.18.") and ip.dst == "198.19.0.1", "addresses %s -> %s" % (ip.src, ip.dst))
    flows_seen.add((ip.src, e[UDP].sport, ip.dst, e[UDP].dport))


def stl(out_dir):
    path = os.path.join(PROFILES, "stl_haka.py")
    # imix: three streams, 60/590/1514 bytes (64/594/1518 with the FCS) at 28:16:4 pps
    streams = [s.to_json() for s in STLProfile.load_py(path, mix="imix", flows=300).get_streams()]
    sizes = [len(base64.b64decode(s["packet"]["binary"])) for s in streams]
    pps = [s["mode"]["rate"]["value"] for s in streams]
    check(sizes == [60, 590, 1514], "imix sizes %s" % sizes)
    check(pps == [28, 16, 4], "imix rates %s" % pps)
    check(all(s["mode"]["type"] == "continuous" and s["enabled"] for s in streams), "imix streams continuous")
    # 25 imix cycles, interleaved as the rates ask: 700 + 400 + 100 packets
    cycles = 25
    per = [run_vm(s, r * cycles) for s, r in zip(streams, pps)]
    packets, idx = [], [0, 0, 0]
    for _ in range(cycles):
        for j, r in enumerate(pps):
            packets.extend(per[j][idx[j]:idx[j] + r])
            idx[j] += r
    flows = set()
    for p in packets:
        check_udp(p, len(p), flows)
    counts = {n: sum(1 for p in packets if len(p) == n) for n in (60, 590, 1514)}
    check(counts == {60: 700, 590: 400, 1514: 100}, "imix counts %s" % counts)
    check(len(flows) == 300, "imix: %d flows, 300 asked" % len(flows))
    write_pcap(os.path.join(out_dir, "imix.pcap"), packets)

    # flood: one 60-byte stream over 1000 flows, sent three times round
    streams = [s.to_json() for s in STLProfile.load_py(path, mix="flood", flows=1000).get_streams()]
    check(len(streams) == 1, "flood: %d streams" % len(streams))
    packets = run_vm(streams[0], 3000)
    flows = set()
    for p in packets:
        check_udp(p, 60, flows)
    check(len(flows) == 1000, "flood: %d flows, 1000 asked" % len(flows))
    check(packets[:1000] == packets[1000:2000], "flood: the tuple generator does not start again after 1000 flows")
    write_pcap(os.path.join(out_dir, "flood.pcap"), packets)

    # the default: 65536 flows = 256 addresses x 256 ports
    vm = STLProfile.load_py(path).get_streams()[0].to_json()["vm"]["instructions"][0]
    check(vm["limit_flows"] == 65536 and vm["ip_max"] - vm["ip_min"] == 255 and vm["port_max"] - vm["port_min"] == 255,
          "default tuple generator %s" % vm)
    print("trex_profiles: stl_haka.py: imix 700/400/100 packets of 60/590/1514 bytes over 300 flows; flood 3000 x 60 bytes over 1000 flows")


def astf():
    path = os.path.join(PROFILES, "astf_http.py")
    j = json.loads(json.dumps(ASTFProfile.load_py(path, size=1000, cps=50).to_json()))
    bufs = [base64.b64decode(b) for b in j["buf_list"]]
    check(len(bufs) == 2, "astf: %d buffers" % len(bufs))
    req, resp = bufs
    check(req.startswith(b"GET /index.html HTTP/1.1\r\n") and b"\r\nHost: 198.19.0.1\r\n" in req and req.endswith(b"\r\n\r\n"),
          "astf: request %r" % req[:80])
    head, _, body = resp.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 1000" in head and len(body) == 1000,
          "astf: response head %r, body %d bytes" % (head[:80], len(body)))
    client, server = [p["commands"] for p in j["program_list"]]
    check(client == [{"name": "tx", "buf_index": 0}, {"name": "rx", "min_bytes": len(resp)}], "astf: client program %s" % client)
    check(server[:2] == [{"name": "rx", "min_bytes": len(req)}, {"name": "tx", "buf_index": 1}], "astf: server program %s" % server)
    ranges = {d["dir"]: (d["ip_start"], d["ip_end"]) for d in j["ip_gen_dist_list"]}
    check(ranges == {"c": ("198.18.0.1", "198.18.255.254"), "s": ("198.19.0.1", "198.19.0.254")}, "astf: ranges %s" % ranges)
    t = j["templates"][0]
    check(t["client_template"]["port"] == 80 and t["client_template"]["cps"] == 50, "astf: client template %s" % t["client_template"])
    check(t["server_template"]["assoc"] == [{"port": 80}], "astf: server template %s" % t["server_template"])
    print("trex_profiles: astf_http.py: HTTP GET/200 programs (%d + %d bytes), clients 198.18.0.0/16 -> servers 198.19.0.0/24:80" % (len(req), len(resp)))


def main():
    out_dir = sys.argv[1]
    stl(out_dir)
    astf()
    print("trex_profiles: %d checks passed" % checks)


if __name__ == "__main__":
    main()
