#!/usr/bin/env bash
# Operating a running haka (issue 15 points 1 and 2), in the lab with real traffic:
# hakactl status / stats / flows / rules / loglevel / reload (a broken file: the error
# reported, the old rules kept, traffic unaffected) / stop; hakactl's one line when haka
# is not running; the periodic stats line; the Prometheus endpoint scraped by a real
# Prometheus server (a counter grows, read through its HTTP API; rule counters start
# again at each reload: a new rules state); the DPDK
# telemetry commands read with dpdk-telemetry.py.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
CTL=${HAKACTL:-$ROOT/target/release/hakactl}
WORK=$(mktemp -d /tmp/haka-lab-ops.XXXXXX)
PROM_PID=
cleanup() {
  [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null
  lab_down
}
trap cleanup EXIT
fail() { echo "FAIL lab_ops: $*"; [ -n "${LAB_DIR:-}" ] && tail -30 "$LAB_DIR/haka.log"; exit 1; }
SOCK="$WORK/haka.sock"
ctl() { "$CTL" --socket "$SOCK" "$@"; }

# haka not running: one line, exit 1 (no socket; then a stale one)
out=$("$CTL" --socket "$WORK/none.sock" status 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "haka is not running" <<<"$out" || fail "no socket: rc $rc: $out"
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$WORK/stale.sock"
out=$("$CTL" --socket "$WORK/stale.sock" stats 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "refused" <<<"$out" || fail "stale socket: rc $rc: $out"

RULES="$WORK/rules.lua"
cat > "$RULES" <<'LUA'
local ipv4 = require("protocol/ipv4")
local icmp = require("protocol/icmp")
local udp = require("protocol/udp")

haka.rule{
    name = "block-ping",
    on = haka.dissectors.icmp.events.receive_packet,
    eval = function (pkt)
        if pkt.type == 8 then
            haka.alert{ description = "ping blocked", severity = "low" }
            pkt:drop()
        end
    end
}

haka.rule{
    name = "faulty",
    on = haka.dissectors.udp.events.receive_packet,
    eval = function (pkt)
        if pkt.dstport == 9999 then error("faulty rule on purpose") end
    end
}

haka.rule{
    on = haka.dissectors.ipv4.events.receive_packet,
    eval = function (pkt) end
}
LUA
cp "$RULES" "$WORK/good.lua"
MPORT=$((20000 + $$ % 20000))
STATS="$WORK/stats.json"
printf '[alerts]\nstdout = false\neve_file = "%s"\n[datapath]\nstats_interval = 1\n' "$WORK/eve.json" > "$WORK/haka.toml"

LAB_TELEMETRY=1 lab_up "hko$$" "$HAKA" -c "$WORK/haka.toml" -r "$RULES" --stats-file "$STATS" \
  --set "control.socket=$SOCK" --set "metrics.listen=127.0.0.1:$MPORT" || fail "lab did not come up"
[ -S "$SOCK" ] || fail "no control socket at $SOCK"
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "control socket mode $(stat -c %a "$SOCK")"
www="$LAB_DIR/www"; mkdir -p "$www"; echo "ops lab" > "$www/index.html"
lab_http_server "$www" || fail "http server"

lab_client ping -c 2 -i 0.2 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through the drop rule"
code=$(lab_client curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$LAB_SERVER_IP:8080/index.html") || fail "curl failed"
[ "$code" = 200 ] || fail "HTTP status $code"
for i in 1 2 3; do lab_client bash -c "echo x > /dev/udp/$LAB_SERVER_IP/9999"; done

# status
out=$(ctl status) || fail "status: $out"
grep -q "^workers: 2 " <<<"$out" && grep -q "^rules: $RULES (loaded " <<<"$out" && grep -q "^mode: inline" <<<"$out" &&
  grep -q "^port 1: net_tap1" <<<"$out" && grep -q "^uptime: " <<<"$out" || fail "status: $out"
# stats, text and JSON
out=$(ctl stats) || fail "stats: $out"
grep -q "^total: rx=" <<<"$out" && grep -q "^worker 1 (lcore 1): " <<<"$out" && grep -q "imissed=0 rx_nombuf=0" <<<"$out" || fail "stats: $out"
ctl stats --json > "$WORK/live.json" || fail "stats --json"
/usr/bin/python3 - "$WORK/live.json" <<'PY' || fail "stats --json content"
import json, sys
s = json.load(open(sys.argv[1]))
t = s["totals"]
assert t["rx"] > 0 and t["dropped_by_reason"]["rule"] >= 2, t
assert len(s["per_worker"]) == 2 and len(s["ports"]) == 2, s
assert s["alerts"]["raised"] >= 2 and s["mempool"][0]["pool"] == "haka_mbufs", s
PY
# flows
out=$(ctl flows --limit 1) || fail "flows: $out"
grep -q "^1 flows shown of [0-9]* live" <<<"$out" || fail "flows --limit 1: $out"
ctl flows --json > "$WORK/flows.json" || fail "flows --json"
/usr/bin/python3 - "$WORK/flows.json" <<'PY' || fail "flows content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["total"] >= 2 and d["shown"] == len(d["flows"]), d
assert any(f["server"] == "198.18.0.2:8080" and f["proto"] == 6 for f in d["flows"]), d["flows"]
PY
# rules: hits and errors
ctl rules --json > "$WORK/rules.json" || fail "rules --json"
/usr/bin/python3 - "$WORK/rules.json" <<'PY' || fail "rules content: $(cat "$WORK/rules.json")"
import json, sys
d = json.load(open(sys.argv[1]))
r = {x["name"] or x["location"]: x for x in d["rules"]}
assert len(d["rules"]) == 3, d
assert r["block-ping"]["hits"] >= 2 and r["block-ping"]["errors"] == 0, r
assert r["faulty"]["errors"] == 3 and r["faulty"]["hits"] >= 3, r
anon = [x for x in d["rules"] if not x["name"]][0]
assert anon["location"].endswith("rules.lua:24") and anon["event"] == "ipv4:receive_packet" and anon["hits"] > 0, anon
PY
out=$(ctl rules) || fail "rules: $out"
grep -q "^faulty .* hits=[0-9]* errors=3$" <<<"$out" || fail "rules text: $out"
# loglevel
out=$(ctl loglevel) && [ "$out" = "loglevel: info" ] || fail "loglevel: $out"
out=$(ctl loglevel debug,http=trace) && [ "$out" = "loglevel: debug,http=trace" ] || fail "loglevel set: $out"
out=$(ctl loglevel loud 2>&1); rc=$?
[ "$rc" = 1 ] && grep -q "unknown log level 'loud'" <<<"$out" || fail "bad loglevel: rc $rc $out"
ctl loglevel info > /dev/null

# reload under traffic: a broken file (error reported, old rules kept), then the good one
( for i in $(seq 1 50); do
    lab_client curl -sS -m 5 -o /dev/null -w '%{http_code}\n' "http://$LAB_SERVER_IP:8080/index.html" || echo ERR
    sleep 0.03
  done > "$WORK/codes.txt" ) &
traffic=$!
sleep 0.3
echo 'haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function (pkt) pkt:drop( end }' > "$RULES"
out=$(ctl reload 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "rules reload refused, the workers keep their rules: .*rules.lua:1:" <<<"$out" || fail "broken reload: rc $rc: $out"
lab_client ping -c 1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through after a failed reload (old rules lost)"
cp "$WORK/good.lua" "$RULES"
out=$(ctl reload 2>&1) || fail "reload: $out"
grep -q "^rules loaded in [0-9.]* ms off the workers, swapped in from $RULES by 2 of 2 workers$" <<<"$out" || fail "reload: $out"
wait "$traffic"
[ "$(grep -c '^200$' "$WORK/codes.txt")" = 50 ] || fail "requests failed during reload: $(sort "$WORK/codes.txt" | uniq -c | tr '\n' ' ')"
lab_client ping -c 1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through after reload"

# a rules file that takes 1 to 2 s of wall time to load (per worker; os.clock would count
# the polling workers' CPU time too): built off the workers, it does not stall them:
# requests made during the reload are answered at once
{ echo 'local t0 = os.time() while os.time() < t0 + 2 do end'; cat "$WORK/good.lua"; } > "$RULES"
( sleep 0.2
  for i in $(seq 1 15); do
    lab_client curl -sS -m 5 -o /dev/null -w '%{http_code} %{time_total}\n' "http://$LAB_SERVER_IP:8080/index.html" || echo ERR
    sleep 0.1
  done > "$WORK/slow.txt" ) &
traffic=$!
out=$(ctl reload 2>&1) || fail "slow reload: $out"
wait "$traffic"
ms=$(sed -n 's/^rules loaded in \([0-9]*\)\..* ms off the workers, swapped in .* by 2 of 2 workers$/\1/p' <<<"$out")
[ -n "$ms" ] && [ "$ms" -ge 2000 ] || fail "slow reload: $out"
/usr/bin/python3 - "$WORK/slow.txt" <<'PY' || fail "requests stalled during a slow reload: $(tr '\n' ' ' < "$WORK/slow.txt")"
import sys
rows = [l.split() for l in open(sys.argv[1])]
assert len(rows) == 15 and all(r[0] == "200" for r in rows), rows
# the worker never stops forwarding: no request waits for a rules load (1 to 2 s)
assert max(float(r[1]) for r in rows) < 0.6, rows
PY
lab_client ping -c 1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through after the slow reload"
cp "$WORK/good.lua" "$RULES"

# the periodic stats line
grep -q "^stats: t=[0-9]*s rx=.* imissed=[0-9]* rx_nombuf=[0-9]* drop_reasons=.*rule:" "$LAB_DIR/haka.log" || fail "stats line without imissed/rx_nombuf/drop reasons"

# /metrics
curl -sS -m 5 "http://127.0.0.1:$MPORT/metrics" > "$WORK/metrics.txt" || fail "GET /metrics"
for m in 'haka_rx_total{worker="0"}' 'haka_dropped_packets_total{worker="0",reason="rule"}' 'haka_port_imissed_total{port="0",name="net_tap0"}' \
  'haka_port_rx_nombuf_total{port="1"' 'haka_rule_hits_total{worker="1",rule="block-ping"' 'haka_rule_errors_total{' \
  'haka_alerts_raised_total ' 'haka_alerts_lost_total ' 'haka_caps_hit_total{cap="flow_table"}' 'haka_mempool_in_use{pool="haka_mbufs"}' \
  'haka_stateful_http_requests_total{worker=' 'haka_flows_active{worker="1"}' '# TYPE haka_rx_total counter'; do
  grep -qF "$m" "$WORK/metrics.txt" || fail "/metrics lacks $m"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/nope"); [ "$code" = 404 ] || fail "GET /nope: $code"

# A real Prometheus server scrapes haka; a counter grows between two queries of its API.
if command -v prometheus > /dev/null; then
  PPORT=$((MPORT + 1))
  cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: haka
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
EOF
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PPORT" > "$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!
  q() { curl -sS -m 5 "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["data"]["result"]; print(int(float(r[0]["value"][1])) if r else -1)' 2>/dev/null || echo -1; }
  v1=-1
  for i in $(seq 1 60); do v1=$(q 'sum(haka_rx_total{job="haka"})'); [ "$v1" -gt 0 ] 2>/dev/null && break; sleep 0.5; done
  [ "$v1" -gt 0 ] 2>/dev/null || { tail -5 "$WORK/prometheus.log"; fail "Prometheus did not scrape haka (sum(haka_rx_total) = $v1)"; }
  up=$(q 'up{job="haka"}'); [ "$up" = 1 ] || fail "Prometheus: up{job=haka} = $up"
  for i in $(seq 1 10); do lab_client curl -sS -m 5 -o /dev/null "http://$LAB_SERVER_IP:8080/index.html"; done
  v2=$v1
  for i in $(seq 1 40); do v2=$(q 'sum(haka_rx_total{job="haka"})'); [ "$v2" -gt "$v1" ] && break; sleep 0.5; done
  [ "$v2" -gt "$v1" ] || fail "Prometheus: haka_rx_total did not grow ($v1 -> $v2)"
  hits=$(q 'sum(haka_rule_hits_total{job="haka",rule="block-ping"})'); [ "$hits" -ge 1 ] || fail "Prometheus: block-ping hits $hits"
  kill "$PROM_PID"; wait "$PROM_PID" 2>/dev/null; PROM_PID=
  echo "lab_ops: Prometheus scraped haka: sum(haka_rx_total) $v1 -> $v2"
else
  fail "prometheus not installed (scripts/setup.sh installs it)"
fi

# DPDK telemetry
if [ -x /usr/bin/dpdk-telemetry.py ]; then
  printf '/haka/flows_count\n/haka/workers\n/haka/workers,1\n/haka/stats\n' |
    /usr/bin/python3 /usr/bin/dpdk-telemetry.py -f "$LAB_NAME" > "$WORK/telemetry.txt" 2>&1 || fail "dpdk-telemetry.py: $(cat "$WORK/telemetry.txt")"
  /usr/bin/python3 - "$WORK/telemetry.txt" <<'PY' || fail "telemetry content: $(cat "$WORK/telemetry.txt")"
import json, sys
# dpdk-telemetry.py prints the JSON answers (with prompts around them)
text = open(sys.argv[1]).read()
objs, dec, i = [], json.JSONDecoder(), 0
while True:
    i = text.find("{", i)
    if i < 0: break
    try:
        o, j = dec.raw_decode(text, i); objs.append(o); i = j
    except ValueError:
        i += 1
assert len(objs) == 4, objs
fc, ws, w1, st = (list(o.values())[0] for o in objs)
assert fc["flows_active"] >= 1 and len(fc["per_worker"]) == 2, fc
assert ws["workers"] == 2 and len(ws["rx"]) == 2, ws
assert w1["worker"] == 1 and "rx" in w1, w1
assert st["rx"] > 0 and st["dropped_by_reason_rule"] >= 2, st
PY
fi

# stop: haka drains and exits 0, the stats file is written, the socket removed
out=$(ctl stop) && [ "$out" = stopping ] || fail "stop: $out"
for i in $(seq 1 100); do kill -0 "$LAB_HAKA_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LAB_HAKA_PID" 2>/dev/null && fail "haka still running after hakactl stop"
wait "$LAB_HAKA_PID"; rc=$?; LAB_HAKA_PID=
[ "$rc" = 0 ] || fail "haka exit code $rc after hakactl stop"
[ -e "$SOCK" ] && fail "control socket left behind"
/usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["totals"]["rules_reload_failed"] == 0 and s["rules_reloads_refused"] == 1 and s["totals"]["rules_reloaded"] == 4, s["totals"]' "$STATS" || fail "stats file after stop"
out=$(ctl status 2>&1); [ $? = 1 ] && grep -q "haka is not running" <<<"$out" || fail "status after stop: $out"
rm -rf "$WORK"
echo "PASS lab_ops"
