#!/usr/bin/env bash
# Alerts shipped to Redis (issue 15 point 4, [alerts.redis]) in the lab: a real
# redis-server started here receives every alert of a run (count checked against
# haka's), then is restarted mid-run: haka reconnects, the alerts raised meanwhile
# arrive or are counted lost, and the counts add up.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
CTL=${HAKACTL:-$ROOT/target/release/hakactl}
WORK=$(mktemp -d /tmp/haka-lab-redis.XXXXXX)
RPORT=$((30000 + $$ % 20000))
REDIS_PID=
redis_up() {
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > "$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for i in $(seq 1 50); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  echo "redis-server did not start"; cat "$WORK/redis.log"; return 1
}
redis_down() { [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null; REDIS_PID=; }
cleanup() { redis_down; lab_down; }
trap cleanup EXIT
fail() { echo "FAIL lab_redis: $*"; [ -n "${LAB_DIR:-}" ] && tail -20 "$LAB_DIR/haka.log"; exit 1; }
command -v redis-server > /dev/null || fail "redis-server not installed (scripts/setup.sh installs it)"
KEY="haka-alerts-$$"
llen() { redis-cli -p "$RPORT" llen "$KEY" 2>/dev/null || echo -1; }
raised() { "$CTL" --socket "$WORK/haka.sock" stats --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["alerts"]["raised"])'; }

cat > "$WORK/rules.lua" <<'LUA'
local icmp = require("protocol/icmp")
haka.rule{
    name = "ping-seen",
    on = haka.dissectors.icmp.events.receive_packet,
    eval = function (pkt)
        if pkt.type == 8 then haka.alert{ description = "ping seen", severity = "low" } end
    end
}
LUA
cat > "$WORK/haka.toml" <<TOML
[alerts]
stdout = false
[alerts.redis]
url = "redis://127.0.0.1:$RPORT"
mode = "list"
key = "$KEY"
[control]
socket = "$WORK/haka.sock"
TOML
redis_up || fail "redis"
lab_up "hkrd$$" "$HAKA" -c "$WORK/haka.toml" -r "$WORK/rules.lua" --stats-file "$WORK/stats.json" || fail "lab did not come up"

# 1. every alert of the run reaches Redis
lab_client ping -c 20 -i 0.05 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping"
for i in $(seq 1 50); do [ "$(llen)" = 20 ] && break; sleep 0.1; done
n1=$(llen); [ "$n1" = 20 ] && [ "$(raised)" = 20 ] || fail "Redis has $n1 alerts, haka raised $(raised)"
redis-cli -p "$RPORT" lindex "$KEY" 0 | /usr/bin/python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["event_type"]=="alert" and a["alert"]["description"]=="ping seen" and a["src_ip"]=="198.18.0.1", a' ||
  fail "alert in Redis is not an EVE alert"

# 2. the server goes away mid-run and comes back (empty: no persistence)
redis_down
lab_client ping -c 10 -i 0.05 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping while Redis is down"
sleep 0.5
redis_up || fail "redis restart"
lab_client ping -c 10 -i 0.05 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping after the restart"
for i in $(seq 1 80); do [ "$(llen)" -ge 10 ] && break; sleep 0.1; done
sleep 0.5
n2=$(llen)
lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
grep -q "alerts: redis redis://127.0.0.1:$RPORT: .*reconnecting" "$LAB_DIR/haka.log" || fail "no reconnect line"
grep -q "alerts: redis redis://127.0.0.1:$RPORT: connected" "$LAB_DIR/haka.log" || fail "no connected line"
/usr/bin/python3 - "$WORK/stats.json" "$n1" "$n2" <<'PY' || fail "counts"
import json, sys
a = json.load(open(sys.argv[1]))["alerts"]
n1, n2 = int(sys.argv[2]), int(sys.argv[3])
assert a["raised"] == 40 and a["lost"] == 0, a
# every alert raised was stored by Redis or counted lost; what Redis holds is what haka says it sent
assert a["redis"] + a["redis_lost"] == a["raised"], a
assert n1 + n2 == a["redis"], (n1, n2, a)
assert n2 >= 10, (n2, a)
print("lab_redis: %d alerts, %d in Redis before its restart, %d after, %d counted lost" % (a["raised"], n1, n2, a["redis_lost"]))
PY
rm -rf "$WORK"
echo "PASS lab_redis"
