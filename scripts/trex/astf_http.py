"""TRex advanced-stateful (ASTF) profile for load-testing haka inline with real TCP
(scripts/trex/README, README "Load testing with TRex"): HTTP/1.1 sessions, each a TCP
connection from a client of 198.18.0.0/16 to a server of 198.19.0.0/24 port 80 (RFC 2544
benchmarking ranges), a GET answered by a `--size`-byte page, then closed. TRex opens
`--cps` connections per second per multiplier unit; its TCP stacks on both sides check
that every byte arrives, so a session haka broke shows up in TRex's counters
(`tcps_connattempt` vs `tcps_closed`, `tcps_rcvbyte`).

    ./t-rex-64 --astf -f astf_http.py -m 1000 -d 60 -t --size 16384
"""
import argparse

from trex.astf.api import (ASTFProfile, ASTFProgram, ASTFIPGen, ASTFIPGenDist, ASTFIPGenGlobal,
                           ASTFTCPClientTemplate, ASTFTCPServerTemplate, ASTFAssociationRule,
                           ASTFTemplate)

CLIENTS = ["198.18.0.1", "198.18.255.254"]
SERVERS = ["198.19.0.1", "198.19.0.254"]


def http_request(uri, host):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: trex-astf\r\nAccept: */*\r\n\r\n" % (uri, host)).encode()


def http_response(size):
    body = (b"<html>" + b"x" * size + b"</html>")[:size]
    return (b"HTTP/1.1 200 OK\r\nServer: trex-astf\r\nContent-Type: text/html\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


class HakaHttp:
    def get_profile(self, tunables, **kwargs):
        parser = argparse.ArgumentParser(description="haka load test: HTTP/1.1 sessions through haka",
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument("--size", type=int, default=16384, help="response body bytes")
        parser.add_argument("--uri", default="/index.html", help="requested path")
        parser.add_argument("--cps", type=float, default=100, help="connections per second (x -m)")
        args = parser.parse_args(tunables)
        if args.size < 0:
            parser.error("--size must be >= 0")
        req = http_request(args.uri, SERVERS[0])
        resp = http_response(args.size)

        # client: send the request, read the whole response, close
        client = ASTFProgram()
        client.send(req)
        client.recv(len(resp))
        # server: read the request, answer, close after the client
        server = ASTFProgram()
        server.recv(len(req))
        server.send(resp)
        server.wait_for_peer_close()

        ip_gen = ASTFIPGen(glob=ASTFIPGenGlobal(ip_offset="1.0.0.0"),
                           dist_client=ASTFIPGenDist(ip_range=CLIENTS, distribution="seq"),
                           dist_server=ASTFIPGenDist(ip_range=SERVERS, distribution="seq"))
        template = ASTFTemplate(
            client_template=ASTFTCPClientTemplate(program=client, ip_gen=ip_gen, port=80, cps=args.cps),
            server_template=ASTFTCPServerTemplate(program=server, assoc=ASTFAssociationRule(port=80)))
        return ASTFProfile(default_ip_gen=ip_gen, templates=template)


def register():
    return HakaHttp()
