#!/usr/bin/env bash
# Throughput benchmark, in one invocation: dpdk-testpmd io forwarding (the
# baseline) and haka (no rules: dissect + flow tracking + forward) on the same
# virtual devices: net_pcap infinite_rx replaying 64k concurrent flows into
# net_null, one forwarding core. Runs alternate; figures are medians.
#   scripts/bench.sh [RUNS=3] [SECONDS=5]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-3}
SECS=${2:-5}
FLOWS=${FLOWS:-65536}
OUT=${BENCH_OUT:-$ROOT/bench-out}
mkdir -p "$OUT"
bash scripts/setup.sh >/dev/null
cargo build --release --bins 2>&1 | tail -1

PCAP="$OUT/flows-$FLOWS.pcap"
[ -s "$PCAP" ] || /usr/bin/python3 scripts/gen_flows_pcap.py "$PCAP" "$FLOWS"
MBUFS=262143
if mountpoint -q /dev/hugepages && [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 512 ]; then
  MEM=(--in-memory)
  echo "bench: hugepages, --in-memory"
else
  MEM=(--no-huge --no-shconf -m 2048)
  echo "bench: NO hugepages available: --no-huge --no-shconf -m 2048 (expect ~40% lower figures)"
fi
DEVS=(--no-pci --vdev "net_pcap0,rx_pcap=$PCAP,infinite_rx=1" --vdev "net_null0,no-rx=1")

run_testpmd() { # prints Mpps wall and cpu
  local log="$OUT/testpmd-$1.log"
  timeout -s INT "$((SECS + 3))" dpdk-testpmd -l 0-1 "${MEM[@]}" "${DEVS[@]}" -- \
    --forward-mode=io --auto-start --stats-period 1 --total-num-mbufs=$MBUFS --burst=32 --nb-cores=1 \
    > "$log" 2>&1 &
  local pid=$!
  # CPU time of the forwarding thread, sampled over the same window as the pps.
  sleep 3
  local tid
  tid=$(ps -L -o tid=,comm= -p "$pid" 2>/dev/null | awk '$2 ~ /worker-1|lcore-worker-1/ {print $1}' | head -1)
  local c0 t0; c0=$(awk '{print $14+$15}' "/proc/$pid/task/$tid/stat" 2>/dev/null || echo 0); t0=$(date +%s.%N)
  local p0; p0=$(grep -c "Rx-pps" "$log" || true)
  sleep "$SECS"
  local c1 t1; c1=$(awk '{print $14+$15}' "/proc/$pid/task/$tid/stat" 2>/dev/null || echo 0); t1=$(date +%s.%N)
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

run_haka() { # run-id [rules file]
  local st="$OUT/haka-$1.json"
  local rules=()
  [ -n "${2:-}" ] && rules=(-r "$2")
  timeout -s INT "$((SECS + 3))" ./target/release/haka -l 0-1 "${MEM[@]}" "${DEVS[@]}" -- \
    -c conf/bench.toml "${rules[@]}" --stats-file "$st" > "$OUT/haka-$1.log" 2>&1 || true
  /usr/bin/python3 - "$st" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = s["totals"]
print("%.2f %.2f %d %d %.1f" % (t["rx"] / s["elapsed_seconds"] / 1e6, t["rx"] / max(t["cpu_seconds"], 1e-9) / 1e6,
      t["flows_active"], s["flow_table"]["bytes"], s["flow_table"]["bytes_per_flow"]))
PY
}

declare -a TP_W TP_C HK_W HK_C R1_W R10_W
for r in $(seq 1 "$RUNS"); do
  read -r w c < <(run_testpmd "$r"); TP_W+=("$w"); TP_C+=("$c")
  echo "run $r: testpmd io        $w Mpps (cpu-normalised $c)"
  read -r w c flows bytes bpf < <(run_haka "$r"); HK_W+=("$w"); HK_C+=("$c")
  echo "run $r: haka (a) no rules $w Mpps (per cpu-second $c), $flows flows tracked"
  read -r w c _ _ _ < <(run_haka "$r-rule1" "$OUT/rule1.lua"); R1_W+=("$w")
  echo "run $r: haka (b) 1 rule   $w Mpps"
  read -r w c _ _ _ < <(run_haka "$r-rule10" "$OUT/rule10.lua"); R10_W+=("$w")
  echo "run $r: haka (c) 10 rules $w Mpps"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tw=$(median "${TP_W[@]}"); tc=$(median "${TP_C[@]}"); hw=$(median "${HK_W[@]}"); hc=$(median "${HK_C[@]}")
r1=$(median "${R1_W[@]}"); r10=$(median "${R10_W[@]}")
echo "----"
echo "testpmd io (baseline):  $tw Mpps wall, $tc Mpps cpu-normalised"
echo "haka (a) no rules:      $hw Mpps wall, $hc Mpps per cpu-second"
awk -v a="$hw" -v b="$tw" -v c="$hc" -v d="$tc" 'BEGIN {printf "ratio (a)/testpmd:      %.2f wall, %.2f cpu (target >= 0.30)\n", a/b, c/d}'
awk -v x="$r1" -v a="$hw" -v b="$tw" 'BEGIN {printf "haka (b) 1 ipv4 rule:   %s Mpps, %.2f of (a) (target >= 0.7), %.2f of testpmd\n", x, x/a, x/b}'
awk -v x="$r10" -v a="$hw" -v b="$tw" 'BEGIN {printf "haka (c) 10 ipv4 rules: %s Mpps, %.2f of (a) (target >= 0.5), %.2f of testpmd\n", x, x/a, x/b}'
echo "flow table: $bytes bytes allocated for its capacity, $bpf bytes per flow slot; $flows flows tracked"
