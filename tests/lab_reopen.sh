#!/usr/bin/env bash
# The EVE file under logrotate, and the SIEM fields in the lab (issue 15 point 4):
# haka writes alerts of the client's pings to an EVE file; the file is moved away
# mid-run and `hakactl reopen` makes haka write the next alerts to a new file at the
# configured path (the moved one keeps the earlier ones); again with SIGHUP (which
# also reloads the rules). The alerts carry in_iface (net_tap0), the rule, its id,
# and the flow_id that `hakactl flows` shows for the ping flow.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
CTL=${HAKACTL:-$ROOT/target/release/hakactl}
WORK=$(mktemp -d /tmp/haka-lab-reopen.XXXXXX)
cleanup() { lab_down; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "FAIL lab_reopen: $*"; [ -n "${LAB_DIR:-}" ] && tail -20 "$LAB_DIR/haka.log"; exit 1; }
cat > "$WORK/rules.lua" <<'LUA'
local icmp = require("protocol/icmp")
haka.rule{
    name = "ping-seen", id = 4242,
    on = haka.dissectors.icmp.events.receive_packet,
    eval = function (pkt)
        if pkt.type == 8 then haka.alert{ description = "ping seen", severity = "low" } end
    end
}
LUA
EVE="$WORK/eve.json"
printf '[alerts]\nstdout = false\neve_file = "%s"\n[control]\nsocket = "%s"\n' "$EVE" "$WORK/haka.sock" > "$WORK/haka.toml"
lab_up "hkro$$" "$HAKA" -c "$WORK/haka.toml" -r "$WORK/rules.lua" || fail "lab did not come up"
count() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
# waits (bounded) until file $1 has $2 lines
wait_lines() { for i in $(seq 1 50); do [ "$(count "$1")" -ge "$2" ] && return 0; sleep 0.1; done; return 1; }

lab_client ping -c 3 -i 0.1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping"
wait_lines "$EVE" 3 || fail "3 alerts expected in $EVE, $(count "$EVE")"
"$CTL" --socket "$WORK/haka.sock" flows --json > "$WORK/flows.json" || fail "hakactl flows"
mv "$EVE" "$EVE.1"
out=$("$CTL" --socket "$WORK/haka.sock" reopen) || fail "hakactl reopen: $out"
[ "$out" = "alerts: reopened $EVE" ] || fail "hakactl reopen said: $out"
lab_client ping -c 2 -i 0.1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping after reopen"
wait_lines "$EVE" 2 || fail "2 alerts expected in the new $EVE, $(count "$EVE")"
[ "$(count "$EVE.1")" = 3 ] || fail "the moved file has $(count "$EVE.1") alerts, expected 3"

mv "$EVE" "$EVE.2"
kill -HUP "$LAB_HAKA_PID"
# (the second "reopened" line: the first one is hakactl's, above)
reopened() { [ "$(grep -c "alerts: reopened $EVE" "$LAB_DIR/haka.log")" -ge 2 ]; }
for i in $(seq 1 50); do reopened && break; sleep 0.1; done
reopened || fail "no reopen after SIGHUP"
lab_client ping -c 4 -i 0.1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping after SIGHUP"
wait_lines "$EVE" 4 || fail "4 alerts expected after SIGHUP, $(count "$EVE")"
[ "$(count "$EVE.2")" = 2 ] || fail "the second moved file has $(count "$EVE.2") alerts, expected 2"
lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"

/usr/bin/python3 - "$WORK" "$LAB_CLIENT_IP" <<'PY' || fail "SIEM fields"
import json, sys
work, client = sys.argv[1], sys.argv[2]
alerts = []
for f in ("eve.json.1", "eve.json.2", "eve.json"):
    alerts += [json.loads(l) for l in open(f"{work}/{f}")]
assert len(alerts) == 9, len(alerts)
for a in alerts:
    assert a["in_iface"] == "net_tap0", a
    assert a["alert"]["rule"] == "ping-seen" and a["alert"]["signature_id"] == 4242, a
    assert a["alert"]["action"] == "allowed" and a["src_ip"] == client and a["proto"] == "ICMP", a
ping_flows = [f for f in json.load(open(f"{work}/flows.json"))["flows"] if f["proto"] == 1]
assert len(ping_flows) == 1, ping_flows
first = [a for a in alerts if a["flow_id"] == ping_flows[0]["flow_id"]]
assert len(first) == 3, (ping_flows, [a["flow_id"] for a in alerts])
assert len({a["flow_id"] for a in alerts}) == 3, "one flow per ping run"
print("lab_reopen: 3 + 2 + 4 alerts in three files, flow_id %d as in hakactl flows" % ping_flows[0]["flow_id"])
PY
echo "PASS lab_reopen"
