#!/usr/bin/env bash
# Floods and faults through the real datapath: haka reads a capture of hostile
# traffic (scripts/hostile_pcap.py) with net_pcap and forwards into net_null, once
# with 10% of the capture and once with all of it. For each case: every packet is
# read and accounted for (rx = tx + dropped), no mbuf is left in use, the case's own
# counters show the defence worked (caps hit, errors counted, rules disabled, alerts
# suppressed), and the worker's peak RSS at 100% stays within the configured memory
# caps of its peak at 10% (state is bounded, not proportional to the input).
# Then SIGKILL and restart leave no hugepage files of the run's prefix behind.
# Prints a table: case, packets, peak RSS at 10% and 100%, the counters checked.
#   FLOOD_CASES="syn_flood dns_many_questions" bash tests/floods.sh   (a subset)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HAKA=${HAKA:-$ROOT/target/release/haka}
WORK=$(mktemp -d /tmp/haka-floods.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL floods: $*"; exit 1; }
[ -x "$HAKA" ] || fail "$HAKA not built"

if mountpoint -q /dev/hugepages && [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 256 ]; then
  MEM=(--in-memory)
else
  MEM=(--no-huge --no-shconf -m 1024)
fi

# Every dissector runs; the rules read what an operator's would.
cat > "$WORK/rules.lua" <<'LUA'
local http = require("protocol/http")
require("protocol/dns")
require("protocol/tls")
require("protocol/tcp_connection")
haka.rule{ on = haka.dissectors.http.events.request, eval = function (h)
  if h.request.uri:find("/admin", 1, true) then haka.alert{ description = "admin" } end
end }
haka.rule{ on = haka.dissectors.dns.events.query, eval = function (d, q)
  if q.question and q.question.name == "evil.example." then haka.alert{ description = "evil" } end
end }
haka.rule{ on = haka.dissectors.tls.events.client_hello, eval = function (t, hello)
  if hello.sni == "blocked.example" then haka.alert{ description = "blocked sni" } end
end }
LUA
# A rule failing on every packet (disabled after 1000 errors), one alerting on every packet.
cat > "$WORK/faulty.lua" <<'LUA'
require("protocol/tcp")
haka.rule{ name = "faulty", on = haka.dissectors.tcp.events.receive_packet, eval = function (pkt)
  local t = nil
  return t.field
end }
LUA
cat > "$WORK/alerts.lua" <<'LUA'
require("protocol/tcp")
haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function (pkt)
  haka.alert{ description = "every packet" }
end }
LUA
# Caps small enough that the floods reach them.
cat > "$WORK/haka.toml" <<'TOML'
[datapath]
stats_interval = 1
[flows]
capacity = 65536
[memory]
worker_mb = 48
[rules]
memory_limit_mb = 64
alert_rate = [100, 1]
[alerts]
stdout = false
TOML

# run CASE SCALE RULES -> sets PKTS, HWM_KB, STATS (path)
run() {
  local case=$1 scale=$2 rules=$3 tag="$1-$2"
  local pcap="$WORK/$tag.pcap"
  PKTS=$(/usr/bin/python3 "$ROOT/scripts/hostile_pcap.py" "$case" "$scale" "$pcap") || fail "$case: generator"
  STATS="$WORK/$tag.json"
  local log="$WORK/$tag.log"
  : > "$log"
  "$HAKA" -l 0 "${MEM[@]}" --file-prefix "hkflood$$" --no-pci --no-telemetry \
    --vdev "net_pcap0,rx_pcap=$pcap" --vdev "net_null0,no-rx=1" \
    -- -c "$WORK/haka.toml" -r "$rules" --stats-file "$STATS" > "$log" 2>&1 &
  local pid=$! i rx=0 last=-1 still=0
  # Until every packet was read (the stats line's rx), at most 120 s.
  for i in $(seq 1 1200); do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "$case: haka exited"; }
    rx=$(grep -o ' rx=[0-9]*' "$log" | tail -1 | cut -d= -f2)
    [ "${rx:-0}" -ge "$PKTS" ] && break
    sleep 0.1
  done
  [ "${rx:-0}" -ge "$PKTS" ] || { tail -5 "$log"; fail "$case $scale: read ${rx:-0} of $PKTS packets in 120 s"; }
  HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -INT "$pid"
  wait "$pid" || { tail -20 "$log"; fail "$case $scale: haka exit code $?"; }
  rm -f "$pcap"
}

# check CASE EXPR...: python assertions on the 100% run's stats (t: totals, s: stateful)
check() {
  local case=$1; shift
  /usr/bin/python3 - "$STATS" "$PKTS" "$case" "$@" <<'PY' || fail "$case: counters"
import json, sys
st = json.load(open(sys.argv[1])); pkts = int(sys.argv[2]); case = sys.argv[3]
t = st["totals"]; s = t["stateful"]; d = t["dropped_by_reason"]
assert t["rx"] == pkts, (case, t["rx"], pkts)
assert t["rx"] == t["tx"] + t["dropped"], (case, t)
assert st["mempool"]["in_use"] == 0, (case, st["mempool"])
assert s["memory_held_bytes"] == 0, (case, "flow memory not all returned", s["memory_held_bytes"])
for e in sys.argv[4:]:
    assert eval(e), (case, e, {k: v for k, v in t.items() if k != "stateful"}, s)
PY
}

printf '%-22s %8s %10s %10s  %s\n' case packets rss10_MiB rss100_MiB counters
row() { # label generator-case rules check-expression...
  local label=$1 case=$2 rules=$3; shift 3
  run "$case" 0.1 "$rules"; local h10=$HWM_KB
  run "$case" 1 "$rules"; local h100=$HWM_KB
  check "$label" "$@"
  # State is capped: the full run may hold at most the engine's and Lua's caps
  # ([memory] worker_mb 48 + [rules] memory_limit_mb 64) more than the 10% run, plus slack.
  [ "$h100" -le $((h10 + (48 + 64 + 32) * 1024)) ] || fail "$label: peak RSS $((h100 / 1024)) MiB at 100% vs $((h10 / 1024)) MiB at 10%"
  local figs
  figs=$(/usr/bin/python3 - "$STATS" "$label" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["totals"]; s = t["stateful"]; d = t["dropped_by_reason"]
keys = {
  "syn_flood": ["flows_evicted", "tcp_connections"],
  "fragment_flood": ["frag_evicted", "frag_timed_out"],
  "far_out_of_order": ["stream_over_cap", "memory_cap_hits_stream", "memory_peak_bytes"],
  "http_header_bomb": ["memory_worker_cap_hits", "memory_peak_bytes"],
  "http_pipelining": ["http_requests", "memory_peak_bytes"],
  "dns_compression_loops": ["dns_errors"],
  "dns_many_questions": ["dns_errors", "memory_peak_bytes"],
  "tls_one_byte_hellos": ["tls_client_hellos", "memory_peak_bytes"],
  "faulty_rule": ["rule_errors", "rules_disabled"],
  "alert_flood": ["alerts_suppressed"],
}[sys.argv[2]]
def get(k):
    for src in (t, s, t.get("defrag", {}), {"frag_evicted": t.get("defrag", {}).get("evicted"), "frag_timed_out": t.get("defrag", {}).get("timed_out")}):
        if k in src and src[k] is not None:
            return src[k]
print(" ".join("%s=%s" % (k, get(k)) for k in keys))
PY
)
  printf '%-22s %8s %10s %10s  %s\n' "$label" "$PKTS" "$((h10 / 1024))" "$((h100 / 1024))" "$figs"
}

CASES=${FLOOD_CASES:-"syn_flood fragment_flood far_out_of_order http_header_bomb http_pipelining dns_compression_loops dns_many_questions tls_one_byte_hellos faulty_rule alert_flood"}
for c in $CASES; do
  case $c in
    syn_flood) row syn_flood syn_flood "$WORK/rules.lua" 't["flows_evicted"] > 0 or t["flows_active"] <= 65536' ;;
    fragment_flood) row fragment_flood fragment_flood "$WORK/rules.lua" 't["defrag"]["evicted"] + t["defrag"]["timed_out"] + t["defrag"]["invalid"] > 0' \
      'd["fragment_incomplete"] + d["fragment_invalid"] == t["defrag"]["fragments"]' ;;
    far_out_of_order) row far_out_of_order far_out_of_order "$WORK/rules.lua" 's["stream_over_cap"] + s["memory_cap_hits_stream"] > 0' ;;
    http_header_bomb) row http_header_bomb http_header_bomb "$WORK/rules.lua" 's["memory_worker_cap_hits"] > 0' 'd["memory_cap"] == s["memory_worker_cap_hits"] + s["memory_flow_cap_hits"]' \
      's["memory_peak_bytes"] <= (48 << 20) + (1 << 20)' ;;
    http_pipelining) row http_pipelining http_pipelining "$WORK/rules.lua" 's["http_requests"] >= pkts * 40 - 200' ;;
    dns_compression_loops) row dns_compression_loops dns_compression_loops "$WORK/rules.lua" 's["dns_errors"] == pkts' 'd["protocol_error"] == pkts' ;;
    dns_many_questions) row dns_many_questions dns_many_questions "$WORK/rules.lua" 's["dns_errors"] == pkts' 'd["protocol_error"] == pkts' ;;
    tls_one_byte_hellos) row tls_one_byte_hellos tls_one_byte_hellos "$WORK/rules.lua" 's["tls_client_hellos"] == s["tcp_connections"]' 's["tls_client_hellos"] > 0' ;;
    faulty_rule)
      row faulty_rule plain_http "$WORK/faulty.lua" 't["rules_disabled"] == 1' 't["rule_errors"] == 1000' 'd["rule_error"] == 1000' ;;
    alert_flood)
      row alert_flood plain_http "$WORK/alerts.lua" 't["alerts_suppressed"] > 0' 'st["alerts"]["raised"] + t["alerts_suppressed"] == t["lua_packets"]' ;;
    *) fail "unknown case $c" ;;
  esac
done

# SIGKILL and restart: a killed haka leaves no hugepage files of its prefix behind
# (--in-memory keeps none), and the next start works; so does a clean exit.
if [ "${MEM[0]}" = "--in-memory" ]; then
  prefix="hkkill$$"
  for round in kill clean; do
    "$HAKA" -l 0 --in-memory --file-prefix "$prefix" --no-pci --no-telemetry \
      --vdev "net_null0" --vdev "net_null1" -- > "$WORK/$round.log" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do grep -q '^ready:' "$WORK/$round.log" && break; sleep 0.1; done
    grep -q '^ready:' "$WORK/$round.log" || { cat "$WORK/$round.log"; fail "$round: haka not ready"; }
    if [ $round = kill ]; then kill -KILL "$pid"; else kill -INT "$pid"; fi
    wait "$pid" 2>/dev/null
    left=$(ls /dev/hugepages 2>/dev/null | grep -c "$prefix" || true)
    [ "$left" = 0 ] || fail "$round: $left hugepage files of prefix $prefix left in /dev/hugepages"
    ls /var/run/dpdk/"$prefix" > /dev/null 2>&1 && [ -n "$(ls /var/run/dpdk/$prefix 2>/dev/null)" ] \
      && fail "$round: runtime files left in /var/run/dpdk/$prefix"
  done
  echo "sigkill/restart: no hugepage or runtime files of the prefix left after SIGKILL nor after a clean exit"
fi
echo "PASS floods"
