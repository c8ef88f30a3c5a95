#!/usr/bin/env bash
# Throughput benchmark, in one invocation: dpdk-testpmd io forwarding (the
# baseline) and haka on the same virtual devices: net_pcap infinite_rx
# replaying a capture into net_null, one forwarding core. Runs alternate;
# figures are medians. Two captures:
# - flows: 64k concurrent flows, one 60-byte packet each: (a) no rules,
#   (b) 1 ipv4 rule, (c) 10 ipv4 rules;
# - http: complete HTTP/1.1 sessions (scripts/gen_http_pcap.py): (d) no
#   rules, (e) rules/bench_http.lua (5 HTTP rules with prefilters and
#   set_headers), (f) rules/bench_http_plain.lua (the same rules in plain Lua:
#   every message handed to Lua); (e) and (f) skipped with a one-line reason
#   when the rules do not load;
# - modbus: Modbus/TCP sessions (scripts/gen_modbus_pcap.py): (g) the Modbus
#   dissector written in Lua with the grammar DSL (rules/modbus.lua) and the 3
#   rules of rules/modbus_rules.lua, against testpmd and haka without rules on
#   the same capture, and against (d).
# - http-common: a less regular HTTP capture (gen_http_pcap.py --irregular: TCP
#   timestamps and SACK, out-of-order and retransmitted segments, lower-case
#   header names, chunked responses, `Server: nginx` on half the responses):
#   testpmd, haka without rules, (i) rules/bench_http_common.lua (6 plain Lua
#   rules as an operator writes them, matching common traffic) and (i) with
#   prefilters (rules/bench_http_common_prefilter.lua: the same rules, each with
#   its prefilter).
# - scale: (h) the flows capture with 1 worker (one rx queue) against 2 workers (and
#   N, when the machine has more cores): net_pcap gets one rx queue per worker, each
#   replaying a part of the flows (scripts/gen_flows_pcap.py --part), the workers on
#   all the lcores (the main one included when there are only 2). Two ways for 2+
#   workers: the software dispatcher (dispatch = "auto": each worker hands the flows
#   another worker owns to it over channels; a capture waits when a channel is full)
#   and dispatch = "queue" (each flow stays on the worker of its queue). Prints Mpps
#   (wall, and per CPU second of the workers), the scaling factor against 1 worker
#   and the drops by reason. Busy-polling workers share the cores with anything else
#   running: the wall figures need a quiet machine (BENCH_PRIORITY=1 runs haka in a
#   session of its own at nice -20, autogroup included, on a shared machine).
#   scripts/bench.sh [RUNS=3] [SECONDS=5]
#   env: BENCH_CASES=flows,http,modbus,scale,http-common (default all)  FLOWS=65536  HTTP_SESSIONS=6000
#        MODBUS_SESSIONS=2000
#        BENCH_OUT=bench-out  HAKA (binary, measured as is; default: cargo build, then
#        $CARGO_TARGET_DIR/release/haka)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-3}
SECS=${2:-5}
FLOWS=${FLOWS:-65536}
HTTP_SESSIONS=${HTTP_SESSIONS:-6000}
MODBUS_SESSIONS=${MODBUS_SESSIONS:-2000}
CASES=",${BENCH_CASES:-flows,http,modbus,scale,http-common},"
OUT=${BENCH_OUT:-$ROOT/bench-out}
# (HAKA given: that binary is measured as it is, nothing is built)
BUILD=1
[ -n "${HAKA:-}" ] && BUILD=
HAKA=${HAKA:-${CARGO_TARGET_DIR:-$ROOT/target}/release/haka}
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
mkdir -p "$OUT"
bash scripts/setup.sh >/dev/null
[ -z "$BUILD" ] || cargo build --release --bins 2>&1 | tail -1

PCAP="$OUT/flows-$FLOWS.pcap"
if [[ $CASES == *,flows,* || $CASES == *,scale,* ]]; then
  [ -s "$PCAP" ] || /usr/bin/python3 scripts/gen_flows_pcap.py "$PCAP" "$FLOWS"
fi
# (h): 2 workers, and N = the cores but one (the main lcore supervises) when there are 4+.
CORES=$(nproc)
SCALE_WORKERS=2
[ "$CORES" -ge 4 ] && SCALE_WORKERS="2 $((CORES - 1))"
if [[ $CASES == *,scale,* ]]; then
  for n in $SCALE_WORKERS; do
    for i in $(seq 0 $((n - 1))); do
      f="${PCAP%.pcap}-part$i-of-$n.pcap"
      [ -s "$f" ] || /usr/bin/python3 scripts/gen_flows_pcap.py "$f" "$FLOWS" --part "$i/$n"
    done
  done
fi
pcap_size() { # FILE; prints packets, bytes (frames as captured), bytes per packet
  /usr/bin/python3 - "$1" <<'PY'
import struct, sys
n = b = 0
with open(sys.argv[1], "rb") as f:
    f.read(24)
    while True:
        h = f.read(16)
        if len(h) < 16:
            break
        cap = struct.unpack("<IIII", h)[2]
        f.seek(cap, 1)
        n += 1
        b += cap
print(n, b, "%.1f" % (b / max(n, 1)))
PY
}
# The HTTP capture is cached under a name that changes with the generator.
HTTP_PCAP="$OUT/http-$HTTP_SESSIONS-$(md5sum scripts/gen_http_pcap.py | cut -c1-8).pcap"
if [[ $CASES == *,http,* ]]; then
  [ -s "$HTTP_PCAP" ] || /usr/bin/python3 scripts/gen_http_pcap.py "$HTTP_PCAP" --sessions "$HTTP_SESSIONS"
  read -r HTTP_PKTS HTTP_BYTES HTTP_BPP < <(pcap_size "$HTTP_PCAP")
fi
# (i): the same generator, --irregular
HTTPC_PCAP="$OUT/http-irregular-$HTTP_SESSIONS-$(md5sum scripts/gen_http_pcap.py | cut -c1-8).pcap"
if [[ $CASES == *,http-common,* ]]; then
  [ -s "$HTTPC_PCAP" ] || /usr/bin/python3 scripts/gen_http_pcap.py "$HTTPC_PCAP" --sessions "$HTTP_SESSIONS" --irregular
  read -r HTTPC_PKTS HTTPC_BYTES HTTPC_BPP < <(pcap_size "$HTTPC_PCAP")
fi
MODBUS_PCAP="$OUT/modbus-$MODBUS_SESSIONS-$(md5sum scripts/gen_modbus_pcap.py scripts/gen_http_pcap.py | md5sum | cut -c1-8).pcap"
if [[ $CASES == *,modbus,* ]]; then
  [ -s "$MODBUS_PCAP" ] || /usr/bin/python3 scripts/gen_modbus_pcap.py "$MODBUS_PCAP" --sessions "$MODBUS_SESSIONS"
  MODBUS_PKTS=$(/usr/bin/python3 - "$MODBUS_PCAP" <<'PY'
import struct, sys
n = 0
with open(sys.argv[1], "rb") as f:
    f.read(24)
    while True:
        h = f.read(16)
        if len(h) < 16:
            break
        f.seek(struct.unpack("<IIII", h)[2], 1)
        n += 1
print(n)
PY
)
fi
# net_pcap infinite_rx copies the whole capture into the pool at queue setup
# (conf/bench.toml and testpmd's --total-num-mbufs use the same size).
MBUFS=262143
if [[ $CASES == *,http,* ]] && [ "$HTTP_PKTS" -gt $((MBUFS - 8192)) ]; then
  echo "bench: $HTTP_PCAP has $HTTP_PKTS packets; the pool holds $MBUFS mbufs: use fewer HTTP_SESSIONS" >&2
  exit 1
fi
if [[ $CASES == *,http-common,* ]] && [ "$HTTPC_PKTS" -gt $((MBUFS - 8192)) ]; then
  echo "bench: $HTTPC_PCAP has $HTTPC_PKTS packets; the pool holds $MBUFS mbufs: use fewer HTTP_SESSIONS" >&2
  exit 1
fi
if [[ $CASES == *,modbus,* ]] && [ "$MODBUS_PKTS" -gt $((MBUFS - 8192)) ]; then
  echo "bench: $MODBUS_PCAP has $MODBUS_PKTS packets; the pool holds $MBUFS mbufs: use fewer MODBUS_SESSIONS" >&2
  exit 1
fi
if mountpoint -q /dev/hugepages && [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 512 ]; then
  MEM=(--in-memory)
  echo "bench: hugepages, --in-memory"
else
  MEM=(--no-huge --no-shconf -m 2048)
  echo "bench: NO hugepages available: --no-huge --no-shconf -m 2048 (expect ~40% lower figures)"
fi
devs() { # PCAP
  DEVS=(--no-pci --vdev "net_pcap0,rx_pcap=$1,infinite_rx=1" --vdev "net_null0,no-rx=1")
}

run_testpmd() { # run-id pcap; prints Mpps wall and cpu
  local log="$OUT/testpmd-$1.log"
  devs "$2"
  timeout --foreground -s INT "$((SECS + 3))" dpdk-testpmd -l 0-1 "${MEM[@]}" "${DEVS[@]}" -- \
    --forward-mode=io --auto-start --stats-period 1 --total-num-mbufs=$MBUFS --burst=32 --nb-cores=1 \
    > "$log" 2>&1 &
  local pid=$!
  # CPU time of the forwarding thread, sampled over the same window as the pps.
  # $! is timeout's pid: the threads are those of its child, dpdk-testpmd.
  sleep 3
  local tp tid
  tp=$(pgrep -P "$pid" | head -1)
  tid=$(ps -L -o tid=,comm= -p "${tp:-0}" 2>/dev/null | awk '$2 ~ /worker-1|lcore-worker-1/ {print $1}' | head -1)
  [ -n "$tid" ] || echo "bench: forwarding thread of testpmd not found: its cpu-normalised figure is the wall figure" >&2
  local c0 t0; c0=$(awk '{print $14+$15}' "/proc/$tp/task/$tid/stat" 2>/dev/null || echo 0); t0=$(date +%s.%N)
  local p0; p0=$(grep -c "Rx-pps" "$log" || true)
  sleep "$SECS"
  local c1 t1; c1=$(awk '{print $14+$15}' "/proc/$tp/task/$tid/stat" 2>/dev/null || echo 0); t1=$(date +%s.%N)
  wait "$pid" || true
  # Port 0 (pcap) receives; port 1 (null, no-rx) does not.
  /usr/bin/python3 - "$log" "$c0" "$c1" "$t0" "$t1" <<'PY'
import re, sys, os
log, c0, c1, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
text = open(log).read()
p0 = [int(x) for x in re.findall(r"NIC statistics for port 0 .*?Rx-pps:\s+(\d+)", text, re.S)]
p0 = [x for x in p0 if x > 0][1:] or [0]  # skip the partial first period
p0.sort()
wall = p0[len(p0) // 2] / 1e6
hz = os.sysconf("SC_CLK_TCK")
cpu_s = (c1 - c0) / hz
busy = cpu_s / max(t1 - t0, 1e-9)
print("%.2f %.2f" % (wall, wall / busy if busy > 0.05 else wall))
PY
}

# Rules for the Lua cases: (b) one ipv4 receive_packet rule reading src, dst
# and ttl of every packet; (c) ten such rules.
RULE='haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function (pkt)
  local src, dst, ttl = pkt.src, pkt.dst, pkt.ttl
  if ttl == 0 and src == dst then pkt:drop() end
end }'
printf 'local ipv4 = require("protocol/ipv4")\n%s\n' "$RULE" > "$OUT/rule1.lua"
{ echo 'local ipv4 = require("protocol/ipv4")'; for i in $(seq 1 10); do echo "$RULE"; done; } > "$OUT/rule10.lua"

run_haka() { # run-id pcap [rules file]; prints "Mpps-wall Mpps-cpu flows table-bytes bytes-per-flow alerts
  # rule-errors dropped", or "skipped: REASON" when haka did not run (e.g. the rules did not load)
  local st="$OUT/haka-$1.json" log="$OUT/haka-$1.log"
  local rules=()
  [ -n "${3:-}" ] && rules=(-r "$3")
  devs "$2"
  rm -f "$st"
  timeout --foreground -s INT "$((SECS + 3))" "$HAKA" -l 0-1 "${MEM[@]}" "${DEVS[@]}" -- \
    -c conf/bench.toml "${rules[@]}" --stats-file "$st" > "$log" 2>&1 || true
  if [ ! -s "$st" ]; then
    local why
    why=$(grep -m1 '^haka: error:' "$log" || tail -n1 "$log")
    echo "skipped: ${why:-haka exited without a stats file} (log: $log)"
    return 0
  fi
  /usr/bin/python3 - "$st" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = s["totals"]
print("%.3f %.3f %d %d %.1f %d %d %d" % (t["rx"] / s["elapsed_seconds"] / 1e6, t["rx"] / max(t["cpu_seconds"], 1e-9) / 1e6,
      t["flows_active"], s["flow_table"]["bytes"], s["flow_table"]["bytes_per_flow"],
      s["alerts"]["raised"], t["rule_errors"], t["dropped"]))
PY
}

# A failed run (no stats file) must not end the benchmark: 0 stands in, and
# the case is reported as failed.
haka_case() { # run-id pcap [rules]; sets W C FLOWS_T BYTES BPF ALERTS RERR DROPPED, or SKIP
  local line
  line=$(run_haka "$@")
  SKIP=
  case "$line" in skipped:*) SKIP=${line#skipped: }; W=0 C=0 FLOWS_T=0 BYTES=0 BPF=0 ALERTS=0 RERR=0 DROPPED=0; return 0 ;; esac
  read -r W C FLOWS_T BYTES BPF ALERTS RERR DROPPED <<<"$line"
}

# (h) one run: run-id workers dispatch(auto|queue); prints "Mpps-wall Mpps-per-cpu-second
# dropped dispatched-out dispatch drop-reasons" (or "skipped: REASON")
run_scale() {
  local id=$1 n=$2 mode=$3 st="$OUT/haka-scale-$1.json" log="$OUT/haka-scale-$1.log" lcores main rx=""
  if [ "$n" = 1 ]; then
    rx=",rx_pcap=$PCAP" lcores=0-1 main=no
  else
    for i in $(seq 0 $((n - 1))); do rx="$rx,rx_pcap=${PCAP%.pcap}-part$i-of-$n.pcap"; done
    if [ "$n" -lt "$CORES" ]; then lcores=0-$n main=no; else lcores=0-$((n - 1)) main=yes; fi
  fi
  rm -f "$st"
  local prio=()
  # (CFS autogroups share the CPU per session whatever the nice value: a session of its own)
  [ "${BENCH_PRIORITY:-0}" = 1 ] && prio=(setsid -w bash -c 'echo -20 > /proc/self/autogroup; exec nice -n -20 "$@"' _)
  "${prio[@]}" timeout --foreground -s INT "$((SECS + 3))" "$HAKA" -l "$lcores" "${MEM[@]}" --no-pci \
    --vdev "net_pcap0$rx,infinite_rx=1" --vdev "net_null0,no-rx=1" -- -c conf/bench.toml \
    --set "datapath.main_lcore_worker=\"$main\"" --set "datapath.dispatch=\"$mode\"" --stats-file "$st" > "$log" 2>&1 || true
  if [ ! -s "$st" ]; then
    echo "skipped: $(grep -m1 '^haka: error:' "$log" || tail -n1 "$log") (log: $log)"
    return 0
  fi
  /usr/bin/python3 - "$st" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = s["totals"]
reasons = ",".join("%s:%d" % (k, v) for k, v in sorted(t["dropped_by_reason"].items()) if v) or "none"
print("%.3f %.3f %d %d %s %s" % (t["rx"] / s["elapsed_seconds"] / 1e6, t["rx"] / max(t["cpu_seconds"], 1e-9) / 1e6 * s["workers"],
      t["dropped"], t["dispatched_out"], s["dispatch"], reasons))
PY
}
declare -A SC_W SC_C SC_LAST

# rules_case RUN ID PCAP RULES LABEL R: one run of haka with RULES into arrays R_W/R_C and
# R_ALERTS/R_RERR/R_DROPPED; R_SKIP once the rules did not load (they will not load in
# later runs either).
rules_case() {
  local r=$1 id=$2 pcap=$3 rules=$4 label=$5
  local -n rw=${6}_W rc=${6}_C rskip=${6}_SKIP ralerts=${6}_ALERTS rrerr=${6}_RERR rdropped=${6}_DROPPED
  [ -z "$rskip" ] || return 0
  haka_case "$id" "$pcap" "$rules"
  if [ -n "$SKIP" ]; then
    rskip=$SKIP
    echo "run $r: haka $label skipped: $SKIP"
  else
    rw+=("$W"); rc+=("$C"); ralerts=$ALERTS rrerr=$RERR rdropped=$DROPPED
    echo "run $r: haka $label $W Mpps (per cpu-second $C), $ALERTS alerts, $RERR rule errors, $DROPPED dropped"
  fi
}

# capture_case RUN ID PCAP RULES NAME LABEL T N R: one run of a capture's three cases:
# testpmd io (into arrays T_W/T_C), haka without rules (N_W/N_C) and haka with RULES
# (R_W/R_C, and R_ALERTS/R_RERR/R_DROPPED; R_SKIP once the rules did not load).
capture_case() {
  local r=$1 id=$2 pcap=$3 rules=$4 name=$5 label=$6 w c
  local -n tw=${7}_W tc=${7}_C nw=${8}_W nc=${8}_C
  read -r w c < <(run_testpmd "$id-$r" "$pcap"); tw+=("$w"); tc+=("$c")
  echo "run $r: testpmd io ($name)  $w Mpps (cpu-normalised $c)"
  haka_case "$id-$r" "$pcap"; nw+=("$W"); nc+=("$C")
  echo "run $r: haka $name, no rules  $W Mpps (per cpu-second $C), $FLOWS_T flows tracked${SKIP:+ FAILED: $SKIP}"
  rules_case "$r" "$id-$r-rules" "$pcap" "$rules" "$label" "$9"
}

declare -a TP_W TP_C HK_W HK_C R1_W R10_W HT_W HT_C HD_W HD_C HE_W HE_C HF_W HF_C MT_W MT_C MN_W MN_C MG_W MG_C
declare -a HCT_W HCT_C HCD_W HCD_C HCI_W HCI_C HCP_W HCP_C
HE_SKIP= HF_SKIP= MG_SKIP= HCI_SKIP= HCP_SKIP=
for r in $(seq 1 "$RUNS"); do
  if [[ $CASES == *,flows,* ]]; then
    read -r w c < <(run_testpmd "$r" "$PCAP"); TP_W+=("$w"); TP_C+=("$c")
    echo "run $r: testpmd io        $w Mpps (cpu-normalised $c)"
    haka_case "$r" "$PCAP"; HK_W+=("$W"); HK_C+=("$C"); flows=$FLOWS_T bytes=$BYTES bpf=$BPF
    echo "run $r: haka (a) no rules $W Mpps (per cpu-second $C), $flows flows tracked${SKIP:+ FAILED: $SKIP}"
    haka_case "$r-rule1" "$PCAP" "$OUT/rule1.lua"; R1_W+=("$W")
    echo "run $r: haka (b) 1 rule   $W Mpps${SKIP:+ FAILED: $SKIP}"
    haka_case "$r-rule10" "$PCAP" "$OUT/rule10.lua"; R10_W+=("$W")
    echo "run $r: haka (c) 10 rules $W Mpps${SKIP:+ FAILED: $SKIP}"
  fi
  if [[ $CASES == *,http,* ]]; then
    read -r w c < <(run_testpmd "http-$r" "$HTTP_PCAP"); HT_W+=("$w"); HT_C+=("$c")
    echo "run $r: testpmd io (http)       $w Mpps (cpu-normalised $c)"
    haka_case "http-$r" "$HTTP_PCAP"; HD_W+=("$W"); HD_C+=("$C")
    echo "run $r: haka (d) http, no rules $W Mpps (per cpu-second $C), $FLOWS_T flows tracked${SKIP:+ FAILED: $SKIP}"
    rules_case "$r" "http-$r-rules" "$HTTP_PCAP" rules/bench_http.lua "(e) http, 5 rules " HE
    rules_case "$r" "http-$r-plain" "$HTTP_PCAP" rules/bench_http_plain.lua "(f) http, 5 plain " HF
  fi
  if [[ $CASES == *,modbus,* ]]; then
    capture_case "$r" modbus "$MODBUS_PCAP" rules/modbus_rules.lua "modbus" "(g) modbus, 3 rules" MT MN MG
  fi
  if [[ $CASES == *,http-common,* ]]; then
    capture_case "$r" httpc "$HTTPC_PCAP" rules/bench_http_common.lua "http irregular" "(i) http irregular, 6 rules" HCT HCD HCI
    rules_case "$r" "httpc-$r-prefilter" "$HTTPC_PCAP" rules/bench_http_common_prefilter.lua "(i) http irregular, 6 rules with prefilters" HCP
  fi
  if [[ $CASES == *,scale,* ]]; then
    # (interleaved: 1 worker, then each N both ways, in every run)
    for cfg in 1:auto $(for n in $SCALE_WORKERS; do echo "$n:auto $n:queue"; done); do
      n=${cfg%%:*} mode=${cfg#*:}
      line=$(run_scale "$r-$n-$mode" "$n" "$mode")
      case "$line" in
        skipped:*) echo "run $r: haka (h) $n worker(s) $mode $line"; w=0 c=0 ;;
        *)
          read -r w c dropped disp name reasons <<<"$line"
          SC_LAST[$cfg]="$dropped dropped ($reasons), $disp dispatched"
          echo "run $r: haka (h) $n worker(s), dispatch=$name: $w Mpps (per core-second x workers $c), $dropped dropped ($reasons), $disp dispatched" ;;
      esac
      SC_W[$cfg]="${SC_W[$cfg]:-} $w"; SC_C[$cfg]="${SC_C[$cfg]:-} $c"
    done
    echo "run $r: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# ratio X Y: X/Y with 2 decimals, 0 when Y is 0 (a failed run)
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", (y > 0 ? x / y : 0)}'; }
ratio3() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.3f", (y > 0 ? x / y : 0)}'; }

if [[ $CASES == *,flows,* ]]; then
  tw=$(median "${TP_W[@]}"); tc=$(median "${TP_C[@]}"); hw=$(median "${HK_W[@]}"); hc=$(median "${HK_C[@]}")
  r1=$(median "${R1_W[@]}"); r10=$(median "${R10_W[@]}")
  echo "----"
  echo "testpmd io (baseline):  $tw Mpps wall, $tc Mpps cpu-normalised"
  echo "haka (a) no rules:      $hw Mpps wall, $hc Mpps per cpu-second"
  echo "ratio (a)/testpmd:      $(ratio "$hw" "$tw") wall, $(ratio "$hc" "$tc") cpu (target >= 0.45)"
  echo "haka (b) 1 ipv4 rule:   $r1 Mpps, $(ratio "$r1" "$hw") of (a) (target >= 0.8), $(ratio "$r1" "$tw") of testpmd"
  echo "haka (c) 10 ipv4 rules: $r10 Mpps, $(ratio "$r10" "$hw") of (a) (target >= 0.5), $(ratio "$r10" "$tw") of testpmd"
  echo "flow table: $bytes bytes allocated for its capacity, $bpf bytes per flow slot; $flows flows tracked"
fi
if [[ $CASES == *,http,* ]]; then
  htw=$(median "${HT_W[@]}"); htc=$(median "${HT_C[@]}"); hdw=$(median "${HD_W[@]}"); hdc=$(median "${HD_C[@]}")
  gbps() { awk -v m="$1" -v b="$HTTP_BPP" 'BEGIN {printf "%.2f", m * b * 8 / 1000}'; }
  echo "----"
  echo "http capture: $HTTP_SESSIONS sessions, $HTTP_PKTS packets, $HTTP_BPP bytes/packet on average ($(basename "$HTTP_PCAP"))"
  echo "testpmd io (http):       $htw Mpps, $(gbps "$htw") Gbit/s wall, $htc Mpps cpu-normalised"
  echo "haka (d) http, no rules: $hdw Mpps, $(gbps "$hdw") Gbit/s wall, $hdc Mpps per cpu-second"
  echo "ratio (d)/testpmd:       $(ratio "$hdw" "$htw") wall, $(ratio "$hdc" "$htc") cpu"
  if [ -n "$HE_SKIP" ]; then
    echo "haka (e) http, 5 rules:  skipped: $HE_SKIP"
  else
    hew=$(median "${HE_W[@]}")
    echo "haka (e) http, 5 rules:  $hew Mpps, $(gbps "$hew") Gbit/s, $(ratio "$hew" "$hdw") of (d), $(ratio "$hew" "$htw") of testpmd"
    echo "  (e) last run: $HE_ALERTS alerts, $HE_RERR rule errors, $HE_DROPPED packets dropped$([ "$HE_ALERTS" = 0 ] && echo ' (no alert: the HTTP rules did not fire)')"
  fi
  if [ -n "$HF_SKIP" ]; then
    echo "haka (f) same, plain Lua: skipped: $HF_SKIP"
  else
    hfw=$(median "${HF_W[@]}")
    echo "haka (f) same, plain Lua: $hfw Mpps, $(gbps "$hfw") Gbit/s, $(ratio "$hfw" "$hdw") of (d), $(ratio "$hfw" "$htw") of testpmd"
    echo "  (f) last run: $HF_ALERTS alerts, $HF_RERR rule errors"
  fi
fi
if [[ $CASES == *,modbus,* ]]; then
  mtw=$(median "${MT_W[@]}"); mtc=$(median "${MT_C[@]}"); mnw=$(median "${MN_W[@]}"); mnc=$(median "${MN_C[@]}")
  echo "----"
  echo "modbus capture: $MODBUS_SESSIONS sessions, $MODBUS_PKTS packets ($(basename "$MODBUS_PCAP"))"
  echo "testpmd io (modbus):        $mtw Mpps wall, $mtc Mpps cpu-normalised"
  echo "haka modbus, no rules:      $mnw Mpps wall, $mnc Mpps per cpu-second"
  if [ -n "$MG_SKIP" ]; then
    echo "haka (g) modbus, 3 rules:   skipped: $MG_SKIP"
  else
    mgw=$(median "${MG_W[@]}"); mgc=$(median "${MG_C[@]}")
    echo "haka (g) modbus, 3 rules:   $mgw Mpps wall, $mgc Mpps per cpu-second (target >= 1), $(ratio3 "$mgc" "$mtc") of testpmd (cpu), $(ratio3 "$mgc" "$mnc") of no rules (cpu)"
    if [[ $CASES == *,http,* ]]; then
      echo "ratio (g)/(d):              $(ratio3 "$mgc" "$hdc") (per cpu-second)"
    else
      echo "ratio (g)/(d):              n/a ((d) runs with BENCH_CASES including http)"
    fi
    echo "  (g) last run: $MG_ALERTS alerts, $MG_RERR rule errors, $MG_DROPPED packets dropped$([ "$MG_ALERTS" = 0 ] && echo ' (no alert: the Modbus rules did not fire)')"
  fi
fi
if [[ $CASES == *,http-common,* ]]; then
  hctw=$(median "${HCT_W[@]}"); hctc=$(median "${HCT_C[@]}"); hcdw=$(median "${HCD_W[@]}"); hcdc=$(median "${HCD_C[@]}")
  echo "----"
  echo "http irregular capture: $HTTP_SESSIONS sessions, $HTTPC_PKTS packets, $HTTPC_BPP bytes/packet on average ($(basename "$HTTPC_PCAP"))"
  echo "testpmd io (http irregular):     $hctw Mpps wall, $hctc Mpps cpu-normalised"
  echo "haka http irregular, no rules:   $hcdw Mpps wall, $hcdc Mpps per cpu-second, $(ratio "$hcdw" "$hctw") of testpmd"
  if [ -n "$HCI_SKIP" ]; then
    echo "haka (i) 6 common rules:         skipped: $HCI_SKIP"
  else
    hciw=$(median "${HCI_W[@]}"); hcic=$(median "${HCI_C[@]}")
    echo "haka (i) 6 common rules:         $hciw Mpps wall, $hcic Mpps per cpu-second (target >= 2.5), $(ratio "$hciw" "$hcdw") of no rules, $(ratio "$hciw" "$hctw") of testpmd"
    echo "  (i) last run: $HCI_ALERTS alerts, $HCI_RERR rule errors, $HCI_DROPPED packets dropped$([ "$HCI_ALERTS" = 0 ] && echo ' (no alert: the HTTP rules did not fire)')"
  fi
  if [ -n "$HCP_SKIP" ]; then
    echo "haka (i) with prefilters:        skipped: $HCP_SKIP"
  else
    hcpw=$(median "${HCP_W[@]}"); hcpc=$(median "${HCP_C[@]}")
    echo "haka (i) with prefilters:        $hcpw Mpps wall, $hcpc Mpps per cpu-second (target >= 3.5), $(ratio "$hcpw" "$hcdw") of no rules, $(ratio "$hcpw" "$hctw") of testpmd"
    echo "  (i) prefilters, last run: $HCP_ALERTS alerts, $HCP_RERR rule errors, $HCP_DROPPED packets dropped$([ "$HCP_ALERTS" = 0 ] && echo ' (no alert: the HTTP rules did not fire)')"
  fi
fi
if [[ $CASES == *,scale,* ]]; then
  # shellcheck disable=SC2086 # (the lists are space-separated numbers)
  s1w=$(median ${SC_W[1:auto]}); s1c=$(median ${SC_C[1:auto]})
  echo "----"
  echo "(h) flows capture, $FLOWS flows, one rx queue per worker; $CORES cores; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "haka (h) 1 worker:              $s1w Mpps wall, $s1c Mpps per core-second"
  for n in $SCALE_WORKERS; do
    for mode in auto queue; do
      # shellcheck disable=SC2086
      w=$(median ${SC_W[$n:$mode]}); c=$(median ${SC_C[$n:$mode]})
      label=$([ "$mode" = auto ] && echo "software dispatch" || echo "dispatch=queue   ")
      printf 'haka (h) %d workers, %s: %s Mpps wall (x%s), %s Mpps per core-second x workers (x%s)%s; last run: %s\n' \
        "$n" "$label" "$w" "$(ratio "$w" "$s1w")" "$c" "$(ratio "$c" "$s1c")" "$([ "$n" = 2 ] && echo ' (target x1.7 wall)')" "${SC_LAST[$n:$mode]:-failed}"
    done
  done
fi
