#!/usr/bin/env bash
# TRex profiles (issue 15 point 8): tests/trex_profiles.py loads scripts/trex/*.py with
# TRex's client library (lbr-trex-client, in the venv scripts/setup.sh makes), checks
# their streams and ASTF programs and writes the STL packets to captures; hakapcap then
# replays them inline: every packet forwarded unchanged, one flow per 5-tuple.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HAKAPCAP=${HAKAPCAP:-$ROOT/target/release/hakapcap}
PY=${TREX_PYTHON:-/opt/haka-trex-venv/bin/python}
WORK=$(mktemp -d /tmp/haka-trex.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL trex: $*"; exit 1; }
[ -x "$PY" ] || fail "$PY not found: run scripts/setup.sh (TRex client venv)"

"$PY" "$ROOT/tests/trex_profiles.py" "$WORK" || fail "profiles"

# replay: NAME PACKETS FLOWS
replay() {
  local name=$1 packets=$2 flows=$3
  out=$("$HAKAPCAP" "$ROOT/rules/empty.lua" "$WORK/$name.pcap" -o "$WORK/$name-out.pcap" --stats-file "$WORK/$name.json" 2>&1) \
    || fail "hakapcap $name: $out"
  grep -q "$name.pcap: $packets packets, $packets accepted, 0 dropped (0 malformed), $flows flows" <<<"$out" \
    || fail "hakapcap $name: $(tail -1 <<<"$out") (expected $packets packets, $flows flows)"
  [ "$(jq '.totals.flows_created' "$WORK/$name.json")" = "$flows" ] || fail "$name: flows_created $(jq '.totals.flows_created' "$WORK/$name.json")"
  # forwarded unchanged and in order
  python3 - "$WORK/$name.pcap" "$WORK/$name-out.pcap" <<'PY' || fail "$name: output differs from input"
import sys
def records(path):
    d = open(path, "rb").read()
    le = d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    o, out = 24, []
    while o < len(d):
        n = int.from_bytes(d[o + 8:o + 12], "little" if le else "big")
        out.append(d[o + 16:o + 16 + n]); o += 16 + n
    return out
a, b = records(sys.argv[1]), records(sys.argv[2])
sys.exit(0 if a == b else 1)
PY
  echo "trex: hakapcap forwarded $name.pcap: $packets packets, $flows flows"
}
replay flood 3000 1000
replay imix 1200 300
echo "PASS trex"
