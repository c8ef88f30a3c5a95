#!/usr/bin/env bash
# HTTP inspection end to end with real kernel traffic: curl in one namespace,
# Python's HTTP server in the other, haka inline between them with
# tests/data/rules/lab_http_ips.lua (HTTP on port 8080 by policy; a URI
# containing "forbidden" is reset; every response gets its Server header
# rewritten and an X-Inspected-By header added).
# Checks: normal pages come back byte-identical with the rewritten headers (a
# 300 KB download too: the size change of the head shifts every later sequence
# number, so TCP must stay consistent both ways); a forbidden URI makes curl
# fail with a reset and never reaches the server; the alert is written;
# requests after the reset still work; no mbuf leaked.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
RULES=$ROOT/tests/data/rules/lab_http_ips.lua
WORK=
trap 'lab_down; [ -n "$WORK" ] && rm -rf "$WORK"' EXIT
fail() { echo "FAIL lab_http_ips: $*"; [ -n "${LAB_DIR:-}" ] && { tail -30 "$LAB_DIR/haka.log"; tail -10 "$LAB_DIR/http.log"; }; exit 1; }

WORK=$(mktemp -d /tmp/haka-lab-ips.XXXXXX)
EVE="$WORK/eve.json"
STATS="$WORK/stats.json"
printf '[alerts]\nstdout = false\neve_file = "%s"\n' "$EVE" > "$WORK/haka.toml"
lab_up "hki$$" "$HAKA" -c "$WORK/haka.toml" --stats-file "$STATS" -r "$RULES" || fail "lab did not come up"
www="$LAB_DIR/www"; mkdir -p "$www/forbidden"
body="haka ips lab $$ $(date +%s%N)"
echo "$body" > "$www/index.html"
echo "secret" > "$www/forbidden/x.html"
head -c 300000 /dev/urandom > "$www/big.bin"
lab_http_server "$www" || fail "http server"

page() { # PATH OUTFILE: fetch with headers, check status 200 and the rewritten headers
  local hdr="$WORK/hdr.txt" rc
  lab_client curl -sS -m 20 -D "$hdr" -o "$2" "http://$LAB_SERVER_IP:8080$1"; rc=$?
  [ "$rc" = 0 ] || fail "curl $1: exit code $rc"
  grep -q '^HTTP/1.[01] 200' "$hdr" || fail "$1: status $(head -1 "$hdr")"
  grep -qi '^Server: haka-ips' "$hdr" || fail "$1: Server header not rewritten: $(tr -d '\r' < "$hdr")"
  grep -qi '^X-Inspected-By: haka' "$hdr" || fail "$1: X-Inspected-By missing: $(tr -d '\r' < "$hdr")"
}

page /index.html "$WORK/index.out"
[ "$(cat "$WORK/index.out")" = "$body" ] || fail "index body mismatch"
page /big.bin "$WORK/big.out"
cmp -s "$WORK/big.out" "$www/big.bin" || fail "300 KB download differs"

out=$(lab_client curl -sS -m 10 "http://$LAB_SERVER_IP:8080/forbidden/x.html" 2>&1); rc=$?
case "$rc" in
  52|56) echo "lab_http_ips: forbidden URI refused, curl exit code $rc: $out" ;;  # empty reply / reset
  0) fail "forbidden URI went through: $out" ;;
  *) fail "forbidden URI: curl exit code $rc (want 52 or 56): $out" ;;
esac
page /index.html "$WORK/index2.out"  # later connections unaffected

lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
sleep 0.2
grep -q 'GET /forbidden' "$LAB_DIR/http.log" && fail "the forbidden request reached the server"
/usr/bin/python3 - "$STATS" "$EVE" "$LAB_CLIENT_IP" "$LAB_SERVER_IP" <<'PY' || fail "stats/EVE check"
import json, sys
st = json.load(open(sys.argv[1])); t = st["totals"]; s = t["stateful"]
cli, srv = sys.argv[3], sys.argv[4]
assert st["mempool"]["in_use"] == 0, st["mempool"]
assert t["malformed"] == 0, t
assert s["http_requests"] == 4 and s["http_responses"] == 3, s
assert s["stream_edits"] == 3 and s["stream_edits_refused"] == 0, s
assert s["resets_sent"] == 2, s
assert t["dropped_by_reason"]["flow_dropped"] >= 1, t
alerts = [json.loads(l) for l in open(sys.argv[2])]
assert len(alerts) == 1, alerts
a = alerts[0]
assert a["alert"]["description"] == "forbidden uri /forbidden/x.html", a
assert a["src_ip"] == cli and a["dest_ip"] == srv and a["dest_port"] == 8080, a
print("lab_http_ips: rx %d tx %d dropped %d, stateful %s" % (t["rx"], t["tx"], t["dropped"], {k: v for k, v in s.items() if v}))
PY
echo "PASS lab_http_ips"
