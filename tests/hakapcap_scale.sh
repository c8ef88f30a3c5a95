#!/usr/bin/env bash
# hakapcap at scale (issue 15 point 7): the input is streamed and the output written as it
# goes, so the peak RSS of a ~1 GB replay stays that of a ~10 MB one; on a terminal a
# progress line (packets, share of the file read, rate) appears, and nothing extra is
# printed when stderr is not a terminal. HAKA_SCALE_MB sets the large size (default 1000).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HAKAPCAP=${HAKAPCAP:-$ROOT/target/release/hakapcap}
BIG_MB=${HAKA_SCALE_MB:-1000}
MARGIN_KB=${HAKA_SCALE_MARGIN_KB:-16384}
WORK=$(mktemp -d /tmp/haka-scale.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL hakapcap_scale: $*"; exit 1; }
# every TCP packet goes through the connection tracking and a Lua rule; nothing dropped
RULES=$WORK/rules.lua
cat >"$RULES" <<'LUA'
local sum = 0
haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function (pkt) sum = sum + pkt.dstport end }
LUA

# ~10 MB of real HTTP sessions, then the same repeated (time moving forward) to BIG_MB
python3 "$ROOT/scripts/gen_http_pcap.py" "$WORK/small.pcap" -n 420 >/dev/null || fail "gen_http_pcap"
python3 "$ROOT/scripts/repeat_pcap.py" "$WORK/small.pcap" "$WORK/big.pcap" "$BIG_MB" >/dev/null || fail "repeat_pcap"
small_n=$(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); o,n=24,0
while o < len(d): o += 16 + int.from_bytes(d[o+8:o+12], "little"); n += 1
print(n)' "$WORK/small.pcap")
big_size=$(stat -c %s "$WORK/big.pcap")
big_n=$(( (big_size - 24) / ($(stat -c %s "$WORK/small.pcap") - 24) * small_n ))

# small, stderr not a terminal: exactly the summary line on stdout, nothing on stderr
/usr/bin/time -f %M -o "$WORK/rss-small" "$HAKAPCAP" "$RULES" "$WORK/small.pcap" -o "$WORK/small-out.pcap" \
  >"$WORK/small.out" 2>"$WORK/small.err" || fail "small run: $(cat "$WORK/small.err")"
[ -s "$WORK/small.err" ] && fail "small run printed on stderr: $(cat "$WORK/small.err")"
[ "$(wc -l <"$WORK/small.out")" = 1 ] || fail "small run: not one line: $(cat "$WORK/small.out")"
grep -q ": $small_n packets, $small_n accepted, 0 dropped" "$WORK/small.out" || fail "small run: $(cat "$WORK/small.out")"
[ "$(stat -c %s "$WORK/small-out.pcap")" = "$(stat -c %s "$WORK/small.pcap")" ] || fail "small output size differs from the input's"

# small on a pseudo-terminal: over in well under 2 s, so no progress line
script -qec "'$HAKAPCAP' '$RULES' '$WORK/small.pcap'" "$WORK/typescript-small" >/dev/null </dev/null \
  || fail "small run on a terminal: $(tail -c 300 "$WORK/typescript-small")"
grep -q "of the file read" "$WORK/typescript-small" && fail "progress line for a short replay: $(cat "$WORK/typescript-small")"
grep -q ": $small_n packets, $small_n accepted" "$WORK/typescript-small" || fail "small run on a terminal: $(cat "$WORK/typescript-small")"

# large, on a pseudo-terminal (script): the progress line appears; peak RSS is measured
start=$(date +%s)
# (HAKAPCAP_PROGRESS_AFTER=0: the line from the start, however fast this machine replays)
script -qec "HAKAPCAP_PROGRESS_AFTER=0 /usr/bin/time -f %M -o '$WORK/rss-big' '$HAKAPCAP' '$RULES' '$WORK/big.pcap' -o '$WORK/big-out.pcap'" \
  "$WORK/typescript" >/dev/null </dev/null || fail "big run: $(tail -c 500 "$WORK/typescript")"
secs=$(( $(date +%s) - start ))
tr '\r' '\n' <"$WORK/typescript" >"$WORK/tty.txt"
grep -q ": $big_n packets, $big_n accepted, 0 dropped" "$WORK/tty.txt" || fail "big run: $(tail -5 "$WORK/tty.txt")"
[ "$(stat -c %s "$WORK/big-out.pcap")" = "$big_size" ] || fail "big output size differs from the input's"
grep -qE "^hakapcap: $WORK/big.pcap: [0-9]+/$big_n packets, [0-9.]+% of the file read, [0-9.]+[kM]? packets/s" "$WORK/tty.txt" \
  || fail "no progress line on the terminal in a ${secs}s run: $(head -c 400 "$WORK/tty.txt")"
grep -qE "^hakapcap: $WORK/big.pcap: $big_n/$big_n packets, 100.0% of the file read, in [0-9.]+s" "$WORK/tty.txt" \
  || fail "no final progress line: $(grep progress "$WORK/tty.txt" | tail -2)"
rss_small=$(tail -1 "$WORK/rss-small"); rss_big=$(tail -1 "$WORK/rss-big")
echo "hakapcap_scale: max RSS $((rss_small / 1024)) MiB for $(( $(stat -c %s "$WORK/small.pcap") / 1000000 )) MB ($small_n packets), $((rss_big / 1024)) MiB for $((big_size / 1000000)) MB ($big_n packets, ${secs}s)"
[ "$rss_big" -le $((rss_small + MARGIN_KB)) ] || fail "RSS grew with the capture: ${rss_small} kB -> ${rss_big} kB (margin ${MARGIN_KB} kB)"
echo "PASS hakapcap_scale"
