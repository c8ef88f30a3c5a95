#!/usr/bin/env bash
# Lua rules with real kernel traffic: a rule drops ICMP echo requests to the
# server (ping fails, curl works, the alert is in the EVE file); then the rules
# are reloaded three times under HTTP traffic (from a broken file and from a file
# that loops at load, both refused by the check made off the workers, which keep
# their rules; then from the good file): every request succeeds and the counts add up.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
trap lab_down EXIT
fail() { echo "FAIL lab_rules: $*"; [ -n "${LAB_DIR:-}" ] && tail -30 "$LAB_DIR/haka.log"; exit 1; }

WORK=$(mktemp -d /tmp/haka-lab-rules.XXXXXX)
RULES="$WORK/rules.lua"
cat > "$RULES" <<'LUA'
local ipv4 = require("protocol/ipv4")
local icmp = require("protocol/icmp")

local server = ipv4.addr("198.18.0.2")

haka.rule{
    on = haka.dissectors.icmp.events.receive_packet,
    eval = function (pkt)
        if pkt.type == 8 and pkt.ip.dst == server then
            haka.alert{
                description = "ping to the server blocked",
                severity = "low",
                sources = haka.alert.address(pkt.ip.src),
                targets = haka.alert.address(pkt.ip.dst),
            }
            pkt:drop()
        end
    end
}
LUA
cp "$RULES" "$WORK/good.lua"
EVE="$WORK/eve.json"
STATS="$WORK/stats.json"
printf '[alerts]\nstdout = false\neve_file = "%s"\n' "$EVE" > "$WORK/haka.toml"

lab_up "hkr$$" "$HAKA" -c "$WORK/haka.toml" -r "$RULES" --stats-file "$STATS" || fail "lab did not come up"
www="$LAB_DIR/www"; mkdir -p "$www"; echo "rules lab" > "$www/index.html"
lab_http_server "$www" || fail "http server"

lab_client ping -c 2 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through the drop rule"
code=$(lab_client curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$LAB_SERVER_IP:8080/index.html") || fail "curl failed"
[ "$code" = 200 ] || fail "HTTP status $code"

# Reload under traffic: 60 requests while SIGHUP arrives twice.
( for i in $(seq 1 60); do
    lab_client curl -sS -m 5 -o /dev/null -w '%{http_code}\n' "http://$LAB_SERVER_IP:8080/index.html" || echo ERR
    sleep 0.03
  done > "$WORK/codes.txt" ) &
traffic=$!
sleep 0.5
echo 'haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function (pkt) pkt:drop( end }' > "$RULES"
kill -HUP "$LAB_HAKA_PID"
for i in $(seq 1 50); do [ "$(grep -c 'rules reload refused' "$LAB_DIR/haka.log")" -ge 1 ] && break; sleep 0.1; done
echo 'while true do end' > "$RULES"
kill -HUP "$LAB_HAKA_PID"
for i in $(seq 1 100); do [ "$(grep -c 'rules reload refused' "$LAB_DIR/haka.log")" -ge 2 ] && break; sleep 0.1; done
cp "$WORK/good.lua" "$RULES"
sleep 0.5
kill -HUP "$LAB_HAKA_PID"
for i in $(seq 1 50); do [ "$(grep -c 'rules reloaded' "$LAB_DIR/haka.log")" -ge 2 ] && break; sleep 0.1; done
wait "$traffic"
[ "$(grep -c '^200$' "$WORK/codes.txt")" = 60 ] || fail "requests failed during reload: $(sort "$WORK/codes.txt" | uniq -c | tr '\n' ' ')"
# The old (then the reloaded) rules still drop ping.
lab_client ping -c 1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 && fail "ping went through after reload"

lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
grep -q 'rules reload refused, the workers keep their rules: .*rules.lua:1:' "$LAB_DIR/haka.log" || fail "no reload error with file:line"
grep -q 'rules reload refused, the workers keep their rules: .*instruction budget exceeded' "$LAB_DIR/haka.log" || fail "the file looping at load was not refused"
grep -q 'rules reload failed' "$LAB_DIR/haka.log" && fail "a worker tried to load a refused file"

/usr/bin/python3 - "$STATS" "$EVE" <<'PY' || fail "stats/EVE check"
import json, sys
st = json.load(open(sys.argv[1])); t = st["totals"]
assert t["rx"] == t["tx"] + t["dropped"], t
by = t["dropped_by_reason"]
# The pings, and at most a couple of tap writes refused while an interface came up.
assert by["rule"] >= 3 and by["rule"] + by["tx_full"] == t["dropped"] and by["tx_full"] <= 2, by
assert t["rules_reload_failed"] == 0 and st["rules_reloads_refused"] == 2, (t, st)
assert t["rules_reloaded"] == st["workers"], t
assert st["mempool"]["in_use"] == 0, st["mempool"]
alerts = [json.loads(l) for l in open(sys.argv[2])]
assert len(alerts) == by["rule"], (len(alerts), by)
a = alerts[0]
assert a["event_type"] == "alert" and a["alert"]["description"] == "ping to the server blocked", a
assert a["src_ip"] == "198.18.0.1" and a["dest_ip"] == "198.18.0.2" and a["proto"] == "ICMP", a
assert st["alerts"]["raised"] == len(alerts) and st["alerts"]["lost"] == 0, st["alerts"]
print("lab_rules: %d pings dropped with alerts, 60/60 requests during 3 reloads (2 refused), rx %d tx %d" % (by["rule"], t["rx"], t["tx"]))
PY
rm -rf "$WORK"
echo "PASS lab_rules"
