# Network-namespace lab, sourced by scripts/demo.sh and tests/*.sh.
#
#   client netns  <-tap->  haka (net_tap0 <-> net_tap1)  <-tap->  server netns
#   198.18.0.1/24                                                 198.18.0.2/24
#
# Only addresses from 198.18.0.0/15 (the benchmarking range). Everything the
# lab creates is removed by lab_down, which callers run from an EXIT trap.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_CLIENT_IP=198.18.0.1
LAB_SERVER_IP=198.18.0.2
LAB_HAKA_PID=
LAB_PIDS=()

# lab_up NAME HAKA_BIN [haka app args...]: starts haka and wires the namespaces.
lab_up() {
  LAB_NAME=$1; shift
  local bin=$1; shift
  LAB_DIR=$(mktemp -d "/tmp/haka-lab-$LAB_NAME.XXXXXX")
  LAB_NS_C="${LAB_NAME}-c"; LAB_NS_S="${LAB_NAME}-s"
  LAB_IF_C="${LAB_NAME:0:10}c0"; LAB_IF_S="${LAB_NAME:0:10}s0"
  ip netns add "$LAB_NS_C"
  ip netns add "$LAB_NS_S"
  # IPv4 only: no IPv6 autoconfiguration chatter racing the links coming up.
  for ns in "$LAB_NS_C" "$LAB_NS_S"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  # The taps are created by haka in this namespace and must stay here until
  # their ports are started: wait for `ready:` before moving them.
  # LAB_TELEMETRY=1: DPDK telemetry on (its socket under /var/run/dpdk/$LAB_NAME/).
  local tel=(--no-telemetry)
  [ -n "${LAB_TELEMETRY:-}" ] && tel=(--file-prefix "$LAB_NAME")
  local mem=(--no-huge --no-shconf -m 512)
  # LAB_SHARED=1: hugepages and EAL's shared config under --file-prefix NAME, so that
  # secondary processes (dpdk-dumpcap) attach; the caller removes
  # /dev/hugepages/NAMEmap_* and /var/run/dpdk/NAME after the run.
  [ -n "${LAB_SHARED:-}" ] && { mem=(); tel=(--file-prefix "$LAB_NAME"); }
  "$bin" -l 0-1 "${mem[@]}" --no-pci "${tel[@]}" \
    --vdev "net_tap0,iface=$LAB_IF_C" --vdev "net_tap1,iface=$LAB_IF_S" \
    -- "$@" > "$LAB_DIR/haka.log" 2>&1 &
  LAB_HAKA_PID=$!
  local i
  for i in $(seq 1 150); do
    grep -q '^ready:' "$LAB_DIR/haka.log" && break
    kill -0 "$LAB_HAKA_PID" 2>/dev/null || { echo "lab: haka exited:"; cat "$LAB_DIR/haka.log"; return 1; }
    sleep 0.2
  done
  grep -q '^ready:' "$LAB_DIR/haka.log" || { echo "lab: haka not ready after 30 s"; cat "$LAB_DIR/haka.log"; return 1; }
  ip link set "$LAB_IF_C" netns "$LAB_NS_C"
  ip link set "$LAB_IF_S" netns "$LAB_NS_S"
  ip netns exec "$LAB_NS_C" sysctl -qw "net.ipv6.conf.$LAB_IF_C.disable_ipv6=1"
  ip netns exec "$LAB_NS_S" sysctl -qw "net.ipv6.conf.$LAB_IF_S.disable_ipv6=1"
  ip -n "$LAB_NS_C" addr add "$LAB_CLIENT_IP/24" dev "$LAB_IF_C"
  ip -n "$LAB_NS_S" addr add "$LAB_SERVER_IP/24" dev "$LAB_IF_S"
  for ns in "$LAB_NS_C" "$LAB_NS_S"; do
    ip -n "$ns" link set lo up
  done
  ip -n "$LAB_NS_C" link set "$LAB_IF_C" up
  ip -n "$LAB_NS_S" link set "$LAB_IF_S" up
  # Both ends up (carrier) before any traffic: a tap written while its
  # interface is still down refuses the packet.
  for i in $(seq 1 50); do
    ip -n "$LAB_NS_C" link show "$LAB_IF_C" | grep -q LOWER_UP &&
      ip -n "$LAB_NS_S" link show "$LAB_IF_S" | grep -q LOWER_UP && break
    sleep 0.1
  done
}

# lab_http_server DIR: a Python HTTP server on the server side, port 8080.
lab_http_server() {
  ip netns exec "$LAB_NS_S" /usr/bin/python3 -m http.server 8080 --bind "$LAB_SERVER_IP" \
    --directory "$1" > "$LAB_DIR/http.log" 2>&1 &
  LAB_PIDS+=($!)
  local i
  for i in $(seq 1 50); do
    ip netns exec "$LAB_NS_S" bash -c "exec 3<>/dev/tcp/$LAB_SERVER_IP/8080" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "lab: http server did not start"; cat "$LAB_DIR/http.log"; return 1
}

lab_client() { ip netns exec "$LAB_NS_C" "$@"; }

# lab_https_server DIR [NAMES]: an HTTPS server (Python http.server wrapped in
# ssl, apt's /usr/bin/python3) on the server side, port 443, serving DIR with a
# fresh self-signed certificate for NAMES (default blocked.example and
# allowed.example; the first is the CN). Each request is logged to
# $LAB_DIR/https.log as "request HOST PATH". Sets LAB_TLS_CERT.
lab_https_server() {
  local dir=$1 names=${2:-blocked.example,allowed.example}
  local py=/usr/bin/python3 tls="$LAB_DIR/tls" san
  "$py" -c 'import ssl' 2>/dev/null || { echo "lab: $py has no ssl module"; return 1; }
  mkdir -p "$tls"
  san=$(sed 's/^/DNS:/; s/,/,DNS:/g' <<<"$names")
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=${names%%,*}" \
    -addext "subjectAltName=$san" -keyout "$tls/key.pem" -out "$tls/cert.pem" > "$tls/openssl.log" 2>&1 ||
    { echo "lab: openssl req failed:"; cat "$tls/openssl.log"; return 1; }
  LAB_TLS_CERT="$tls/cert.pem"
  cat > "$tls/server.py" <<'PY'
import functools, http.server, ssl, sys
addr, directory, cert, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

class Handler(http.server.SimpleHTTPRequestHandler):
    timeout = 10  # a stalled handshake or request never blocks the server for long
    def handle_one_request(self):
        self.command = None
        super().handle_one_request()
        if self.command and getattr(self, "headers", None) is not None:
            sys.stderr.write("request %s %s\n" % (self.headers.get("Host", "-"), self.path))
            sys.stderr.flush()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def get_request(self):
        sock, peer = self.socket.accept()
        # The handshake runs in the connection's thread, on first read: a
        # client that connects and says nothing (or is reset) cannot stall accept().
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), peer

srv = Server((addr, 443), functools.partial(Handler, directory=directory))
sys.stderr.write("listening %s:443\n" % addr)
sys.stderr.flush()
srv.serve_forever()
PY
  ip netns exec "$LAB_NS_S" "$py" "$tls/server.py" "$LAB_SERVER_IP" "$dir" "$tls/cert.pem" "$tls/key.pem" \
    > "$LAB_DIR/https.log" 2>&1 &
  LAB_PIDS+=($!)
  local i
  for i in $(seq 1 50); do
    grep -q '^listening' "$LAB_DIR/https.log" 2>/dev/null && return 0
    kill -0 "${LAB_PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "lab: https server did not start"; cat "$LAB_DIR/https.log"; return 1
}

# lab_https_get HOST [curl args...]: from the client side, GET https://HOST/
# with HOST resolved to the server, so the ClientHello carries SNI HOST. The
# certificate is not checked (-k). Prints the body; returns curl's exit code.
lab_https_get() {
  local host=$1; shift
  lab_client curl -sk -m 10 --resolve "$host:443:$LAB_SERVER_IP" "$@" "https://$host/"
}

# lab_stop_haka: SIGINT, then wait (bounded) for the clean exit.
lab_stop_haka() {
  [ -n "$LAB_HAKA_PID" ] || return 0
  kill -INT "$LAB_HAKA_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$LAB_HAKA_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$LAB_HAKA_PID" 2>/dev/null; then
    echo "lab: haka did not stop on SIGINT; killing it"
    kill -KILL "$LAB_HAKA_PID" 2>/dev/null || true
  fi
  wait "$LAB_HAKA_PID" 2>/dev/null
  LAB_HAKA_RC=$?
  LAB_HAKA_PID=
  return 0
}

lab_down() {
  local p
  for p in "${LAB_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  LAB_PIDS=()
  lab_stop_haka
  [ -n "${LAB_NS_C:-}" ] && ip netns del "$LAB_NS_C" 2>/dev/null
  [ -n "${LAB_NS_S:-}" ] && ip netns del "$LAB_NS_S" 2>/dev/null
  return 0
}
