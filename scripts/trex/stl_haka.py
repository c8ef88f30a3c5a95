"""TRex stateless profile for load-testing haka inline (scripts/trex/README, README
"Load testing with TRex"): UDP/IPv4 traffic over many flows, as one of two mixes
(tunable `mix`):

- `imix` (default): the classic IMIX, 60/590/1514-byte frames (64/594/1518 on the wire
  with the FCS) at 28:16:4 packets per second;
- `flood`: 64-byte frames (60 without the FCS), the packet-rate worst case.

Every stream varies its source address and source port with the field engine, so the
traffic spreads over `flows` distinct 5-tuples (default 65536: 256 source addresses x
256 source ports), which haka's symmetric RSS spreads over its workers. Addresses are
from 198.18.0.0/15 (RFC 2544 benchmarking). Fixed MACs: haka forwards port to port, it
does not route.

    trex-console> start -f stl_haka.py -m 10mpps --port 0 -t --mix flood --flows 1000000
"""
import argparse

from trex.stl.api import STLStream, STLPktBuilder, STLTXCont, STLVM
from scapy.layers.l2 import Ether
from scapy.layers.inet import IP, UDP

# (sizes without the 4-byte FCS, as TRex builds them; pps ratio)
IMIX = [(60, 28), (590, 16), (1514, 4)]
FLOOD = [(60, 1)]

SRC_NET = "198.18.0.0"
DST_IP = "198.19.0.1"


class STLHaka:
    def get_streams(self, tunables, **kwargs):
        parser = argparse.ArgumentParser(description="haka load test: imix or 64-byte flood over many flows",
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument("--mix", choices=["imix", "flood"], default="imix", help="packet size mix")
        parser.add_argument("--flows", type=int, default=65536, help="distinct UDP flows (5-tuples)")
        args = parser.parse_args(tunables)
        flows = args.flows
        if flows < 1 or flows > 256 * 64511:
            parser.error("--flows must be between 1 and %d" % (256 * 64511))
        sizes = IMIX if args.mix == "imix" else FLOOD
        # flows = source addresses x source ports (up to 256 addresses)
        n_ips = min(flows, 256)
        n_ports = (flows + n_ips - 1) // n_ips
        return [self._stream(size, pps, n_ips, n_ports, flows) for size, pps in sizes]

    @staticmethod
    def _stream(size, pps, n_ips, n_ports, flows):
        base = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=SRC_NET, dst=DST_IP, ttl=64) / UDP(sport=1025, dport=5001, chksum=0)
        pkt = base / ("x" * max(0, size - len(base)))
        vm = STLVM()
        # TRex's tuple generator: the address walks its range, each wrap steps the port;
        # `flows` distinct (address, port) pairs, then it starts again
        vm.tuple_var(name="flow", ip_min=SRC_NET, ip_max=_ip_add(SRC_NET, n_ips - 1),
                     port_min=1025, port_max=1025 + n_ports - 1, limit_flows=flows)
        vm.write(fv_name="flow.ip", pkt_offset="IP.src")
        vm.write(fv_name="flow.port", pkt_offset="UDP.sport")
        vm.fix_chksum(offset="IP")  # (UDP checksum 0: none, valid over IPv4)
        return STLStream(packet=STLPktBuilder(pkt=pkt, vm=vm), mode=STLTXCont(pps=pps))


def _ip_add(ip, n):
    a = [int(x) for x in ip.split(".")]
    v = (a[0] << 24 | a[1] << 16 | a[2] << 8 | a[3]) + n
    return ".".join(str((v >> s) & 0xFF) for s in (24, 16, 8, 0))


def register():
    return STLHaka()
