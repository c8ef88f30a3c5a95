#!/usr/bin/env bash
# TLS through haka with real kernel traffic: an HTTPS server (self-signed
# certificate for blocked.example and allowed.example) in the server namespace,
# curl in the client namespace with the name resolved to the server, so each
# ClientHello carries that SNI.
#
#   tests/lab_tls.sh [RULES]   RULES defaults to rules/tls_block_sni.lua
#
# With a rules file: https://allowed.example works (page body checked),
# https://blocked.example fails with a connection reset (curl 35 or 56) and
# never reaches the server, the alert "blocked SNI blocked.example" is in the
# EVE file, and allowed.example still works afterwards.
# With RULES="" (no rules): both names work and no alert is raised; this
# checks the HTTPS lab itself through haka.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
RULES=${1-$ROOT/rules/tls_block_sni.lua}
WORK=
trap 'lab_down; [ -n "$WORK" ] && rm -rf "$WORK"' EXIT
fail() { echo "FAIL lab_tls: $*"; [ -n "${LAB_DIR:-}" ] && { tail -30 "$LAB_DIR/haka.log"; tail -10 "$LAB_DIR/https.log"; }; exit 1; }

WORK=$(mktemp -d /tmp/haka-lab-tls.XXXXXX)
EVE="$WORK/eve.json"
STATS="$WORK/stats.json"
printf '[alerts]\nstdout = false\neve_file = "%s"\n' "$EVE" > "$WORK/haka.toml"
args=(-c "$WORK/haka.toml" --stats-file "$STATS")
if [ -n "$RULES" ]; then
  [ -f "$RULES" ] || fail "no rules file $RULES"
  args+=(-r "$RULES")
  echo "lab_tls: rules $RULES"
else
  echo "lab_tls: no rules (both names must work)"
fi

lab_up "hks$$" "$HAKA" "${args[@]}" || fail "lab did not come up"
www="$LAB_DIR/www"; mkdir -p "$www"
body="haka tls lab $$ $(date +%s%N)"
echo "$body" > "$www/index.html"
lab_https_server "$www" || fail "https server"

get_ok() { # HOST: the page must come back, byte for byte
  local out rc
  out=$(lab_https_get "$1" -S -w '\n%{http_code}' 2>&1); rc=$?
  [ "$rc" = 0 ] || fail "curl https://$1/ exit code $rc: $out"
  [ "$(tail -n1 <<<"$out")" = 200 ] || fail "https://$1/: HTTP status $(tail -n1 <<<"$out")"
  [ "$(head -n -1 <<<"$out")" = "$body" ] || fail "https://$1/: body mismatch: $(head -n -1 <<<"$out")"
}

get_ok allowed.example
if [ -n "$RULES" ]; then
  out=$(lab_https_get blocked.example -S 2>&1); rc=$?
  case "$rc" in
    35|56) ;;  # SSL connect error / failure receiving data: the connection was reset
    0) fail "https://blocked.example/ went through the rules: $out" ;;
    *) fail "https://blocked.example/: curl exit code $rc (want 35 or 56, a reset): $out" ;;
  esac
  echo "lab_tls: blocked.example refused, curl exit code $rc: $out"
else
  get_ok blocked.example
fi
get_ok allowed.example  # other connections are unaffected

lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
sleep 0.2  # the server's last log lines
grep -c '^request allowed.example /' "$LAB_DIR/https.log" | grep -qx 2 || fail "allowed.example requests in the server log: $(grep '^request' "$LAB_DIR/https.log")"
if [ -n "$RULES" ]; then
  grep -q '^request blocked.example' "$LAB_DIR/https.log" && fail "a request for blocked.example reached the server"
else
  grep -q '^request blocked.example /' "$LAB_DIR/https.log" || fail "no blocked.example request in the server log"
fi

/usr/bin/python3 - "$STATS" "$EVE" "${RULES:+rules}" "$LAB_CLIENT_IP" "$LAB_SERVER_IP" <<'PY' || fail "stats/EVE check"
import json, os, sys
st = json.load(open(sys.argv[1])); t = st["totals"]
with_rules, cli, srv = sys.argv[3] == "rules", sys.argv[4], sys.argv[5]
assert t["malformed"] == 0, t
assert st["mempool"]["in_use"] == 0, st["mempool"]
alerts = [json.loads(l) for l in open(sys.argv[2])] if os.path.exists(sys.argv[2]) else []
if with_rules:
    sni = [a for a in alerts if "blocked.example" in a["alert"]["description"]]
    assert len(sni) == 1, alerts
    a = sni[0]
    assert a["alert"]["description"] == "blocked SNI blocked.example", a
    assert a["src_ip"] == cli and a["dest_ip"] == srv and a["dest_port"] == 443, a
    assert not any("allowed.example" in x["alert"]["description"] for x in alerts), alerts
else:
    assert t["rx"] == t["tx"] + t["dropped"], t
    assert alerts == [], alerts
    assert t["dropped"] == t["dropped_by_reason"]["tx_full"] <= 2, t
assert st["alerts"]["lost"] == 0, st["alerts"]
print("lab_tls: rx %d tx %d dropped %d, %d alerts" % (t["rx"], t["tx"], t["dropped"], len(alerts)))
PY
if [ -n "$RULES" ]; then echo "PASS lab_tls ($(basename "$RULES"))"; else echo "PASS lab_tls (no rules)"; fi
