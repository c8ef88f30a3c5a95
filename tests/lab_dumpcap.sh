#!/usr/bin/env bash
# dpdk-dumpcap on a running haka (issue 15 point 3): haka runs in the lab with
# hugepages and a shared EAL config (--file-prefix, no --in-memory / --no-shconf),
# calls rte_pdump_init at start ([ports] pdump, on by default), and DPDK's own
# dpdk-dumpcap, a secondary process, captures N packets of the client's pings from
# port net_tap0; the pcapng it writes is read back with tshark (N packets, ICMP
# from the client). Then a haka with pdump = false is refused by dumpcap.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
WORK=$(mktemp -d /tmp/haka-lab-dumpcap.XXXXXX)
N=8
NAME="hkpd$$"
DUMP_PID=
cleanup() {
  [ -n "$DUMP_PID" ] && kill "$DUMP_PID" 2>/dev/null
  lab_down
  rm -f /dev/hugepages/${NAME}map_* /dev/hugepages/${NAME}2map_*
  rm -rf "/var/run/dpdk/$NAME" "/var/run/dpdk/${NAME}2" "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL lab_dumpcap: $*"; [ -n "${LAB_DIR:-}" ] && tail -20 "$LAB_DIR/haka.log"; exit 1; }
command -v dpdk-dumpcap > /dev/null || fail "dpdk-dumpcap not installed (package dpdk)"
command -v tshark > /dev/null || fail "tshark not installed"
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
[ "${free:-0}" -ge 256 ] || fail "needs 256 free 2 MiB hugepages (scripts/setup.sh reserves them), $free free"

printf '[control]\nsocket = ""\n' > "$WORK/haka.toml"
LAB_SHARED=1 lab_up "$NAME" "$HAKA" -c "$WORK/haka.toml" || fail "lab did not come up"
grep -q "^pdump: on (dpdk-dumpcap --file-prefix $NAME -i PORT)" "$LAB_DIR/haka.log" || fail "no 'pdump: on' line"
lab_client ping -c 2 -i 0.2 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping through haka"

# dumpcap attaches, then waits for N packets (bounded in time)
timeout 30 dpdk-dumpcap --file-prefix="$NAME" -i net_tap0 -c "$N" -w "$WORK/cap.pcapng" > "$WORK/dumpcap.log" 2>&1 &
DUMP_PID=$!
# (it prints "File: PATH" once attached and capturing)
for i in $(seq 1 100); do grep -q "^File: " "$WORK/dumpcap.log" && break; kill -0 "$DUMP_PID" 2>/dev/null || break; sleep 0.1; done
grep -q "^File: " "$WORK/dumpcap.log" || { cat "$WORK/dumpcap.log"; fail "dpdk-dumpcap did not attach"; }
lab_client ping -c $((N + 4)) -i 0.1 -W 1 "$LAB_SERVER_IP" > /dev/null 2>&1 || fail "ping while capturing"
wait "$DUMP_PID"; rc=$?; DUMP_PID=
[ "$rc" = 0 ] || fail "dpdk-dumpcap exit $rc: $(tr '\n' ' ' < "$WORK/dumpcap.log")"
got=$(tshark -r "$WORK/cap.pcapng" 2>/dev/null | wc -l)
[ "$got" = "$N" ] || fail "capture has $got packets, expected $N"
# (net_tap0 faces the client: its pings come in, the replies go out; both are captured)
icmp=$(tshark -r "$WORK/cap.pcapng" -Y "icmp" 2>/dev/null | wc -l)
req=$(tshark -r "$WORK/cap.pcapng" -Y "icmp.type == 8 && ip.src == $LAB_CLIENT_IP" 2>/dev/null | wc -l)
[ "$icmp" -ge $((N / 2)) ] && [ "$req" -ge 1 ] || fail "capture has $icmp ICMP packets ($req requests from the client) of $N"
file "$WORK/cap.pcapng" | grep -qi pcapng || fail "not a pcapng file"
lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
lab_down

# [ports] pdump = false: dumpcap cannot enable the capture
printf '[control]\nsocket = ""\n[ports]\npdump = false\n' > "$WORK/haka.toml"
LAB_SHARED=1 lab_up "${NAME}2" "$HAKA" -c "$WORK/haka.toml" || fail "second lab did not come up"
grep -q "^pdump: on" "$LAB_DIR/haka.log" && fail "pdump on with pdump = false"
timeout 15 dpdk-dumpcap --file-prefix="${NAME}2" -i net_tap0 -c 1 -w "$WORK/cap2.pcapng" > "$WORK/dumpcap2.log" 2>&1
rc=$?
[ "$rc" != 0 ] || fail "dpdk-dumpcap captured with pdump = false"
echo "lab_dumpcap: dpdk-dumpcap captured $got packets ($icmp ICMP) from haka's net_tap0; refused with pdump = false: $(grep -m1 -i -E 'fail|error' "$WORK/dumpcap2.log")"
echo "PASS lab_dumpcap"
