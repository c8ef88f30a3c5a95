#!/usr/bin/env bash
# Checks before start (issue 15 point 5): haka --check and --set, and each bad input
# with its one-line error, found before EAL starts where it can be (no EAL line is
# printed), EAL failures explained (hugepages not mounted, not root, device not bound).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HAKA=${HAKA:-$ROOT/target/release/haka}
WORK=$(mktemp -d /tmp/haka-checks.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL checks: $*"; exit 1; }
EAL=(-l 0 --no-huge --no-shconf -m 512 --no-pci --no-telemetry --vdev net_null0)
NOSOCK=(--set 'control.socket=""')
n=0

# ok CASE ARGS...: exit 0
ok() {
  local name=$1; shift
  out=$("$HAKA" "$@" 2>&1); rc=$?
  [ "$rc" = 0 ] || fail "$name: exit $rc: $out"
  n=$((n + 1))
}
# bad CASE PATTERN ARGS...: exit 1, one line "haka: error: ..." matching PATTERN, no EAL line
# unless the case is an EAL one (EAL in its name)
bad() {
  local name=$1 pat=$2; shift 2
  out=$("$HAKA" "$@" 2>&1); rc=$?
  [ "$rc" = 1 ] || fail "$name: exit $rc (expected 1): $out"
  [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "$name: not one line: $out"
  grep -q '^haka: error: ' <<<"$out" || fail "$name: $out"
  grep -qE -- "$pat" <<<"$out" || fail "$name: /$pat/ not in: $out"
  echo "  $name: $out"
  n=$((n + 1))
}

# bad_last CASE PATTERN ARGS...: as bad, for a failure after EAL started (its own lines
# come first): the last line is the one-line error
bad_last() {
  local name=$1 pat=$2; shift 2
  out=$("$HAKA" "$@" 2>&1); rc=$?
  [ "$rc" = 1 ] || fail "$name: exit $rc (expected 1): $out"
  out=$(printf '%s\n' "$out" | tail -1)
  grep -q '^haka: error: ' <<<"$out" && grep -qE -- "$pat" <<<"$out" || fail "$name: /$pat/ not in: $out"
  echo "  $name: $out"
  n=$((n + 1))
}

echo "== --check"
ok "check defaults" "${EAL[@]}" -- --check -c "$ROOT/conf/haka.toml" -r "$ROOT/rules/ipfilter.lua"
grep -q "^haka: configuration OK: config $ROOT/conf/haka.toml, rules $ROOT/rules/ipfilter.lua, EAL arguments \[-l 0 --no-huge" <<<"$out" || fail "check output: $out"
ok "check with --set" "${EAL[@]}" -- -T --set flows.capacity=1024 --set 'metrics.listen="127.0.0.1:9477"' --set log.level=debug,http=trace
printf 'local x = 1\nhaka.rule{ on = nil, eval = function() end }\nthis is not lua\n' > "$WORK/bad.lua"
bad "rules that do not load" "bad.lua:3: " "${EAL[@]}" -- --check -r "$WORK/bad.lua"
bad "missing rules file" "nope.lua" "${EAL[@]}" -- --check -r "$WORK/nope.lua"

echo "== config and --set"
printf '[datapath]\nstats_interval = 1\n\n[mempool]\ncache_size = 1000\n' > "$WORK/range.toml"
bad "range error names the line" "range.toml:5: mempool.cache_size = 1000: must be at most 512" "${EAL[@]}" -- --check -c "$WORK/range.toml"
printf '[flows]\nudp_timeout = -3\n' > "$WORK/neg.toml"
bad "negative value names the line" "neg.toml:2: flows.udp_timeout" "${EAL[@]}" -- --check -c "$WORK/neg.toml"
bad "--set range" "^haka: error: --set flows.capacity=0: flows.capacity = 0: must be at least 1" "${EAL[@]}" -- --check --set flows.capacity=0
bad "--set type" "^haka: error: --set flows.capacity=many: " "${EAL[@]}" -- --check --set flows.capacity=many
bad "--set unknown key" "--set flows.bogus=1: .*bogus" "${EAL[@]}" -- --check --set flows.bogus=1
bad "--set no key" "section.key=value" "${EAL[@]}" -- --check --set flows
bad "--loglevel" "unknown log level 'loud'" "${EAL[@]}" -- --check --loglevel loud
bad "metrics.listen" "metrics.listen = \"nowhere\"" "${EAL[@]}" -- --check --set metrics.listen=nowhere

echo "== memory"
bad "flow capacity refused with bytes" "flows.capacity = 4000000000: 1 workers x 4000000000 flows x [0-9]+ bytes = [0-9]+ bytes \(.* GiB\) needed" \
  "${EAL[@]}" -- --check --set flows.capacity=4000000000
printf '[flows]\ncapacity = 4000000000\n' > "$WORK/huge.toml"
bad "flow capacity (not --check)" "flows.capacity = 4000000000: .* bytes" "${EAL[@]}" -- -c "$WORK/huge.toml" "${NOSOCK[@]}"
bad "pool size" "mempool.mbufs = 2000000: 2000000 mbufs x 2368 bytes .* do not fit the 512.0 MiB EAL has" "${EAL[@]}" -- --check --set mempool.mbufs=2000000

echo "== paths (before EAL)"
bad "stats file directory" "--stats-file $WORK/no/dir/s.json: directory $WORK/no/dir does not exist" "${EAL[@]}" -- --stats-file "$WORK/no/dir/s.json" "${NOSOCK[@]}"
mkdir "$WORK/adir"
bad "stats file is a directory" "is a directory" "${EAL[@]}" -- --stats-file "$WORK/adir" "${NOSOCK[@]}"
bad "flow dump" "--flow-dump /proc/haka-flows.json: cannot create it" "${EAL[@]}" -- --flow-dump /proc/haka-flows.json "${NOSOCK[@]}"
bad "EVE file" "alerts.eve_file /proc/haka/eve.json: directory /proc/haka does not exist" "${EAL[@]}" -- --set alerts.eve_file=/proc/haka/eve.json "${NOSOCK[@]}"
bad "control socket directory" "control socket /proc/haka/haka.sock: cannot write in /proc" "${EAL[@]}" -- --set control.socket=/proc/haka/haka.sock
bad "control socket not absolute" "control.socket = \"haka.sock\": must be an absolute path" "${EAL[@]}" -- --set control.socket=haka.sock
/usr/bin/python3 -c 'import socket,sys,time
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen()
open(sys.argv[1],"w").write(str(s.getsockname()[1])); time.sleep(30)' "$WORK/port" > /dev/null 2>&1 &
holder=$!
for i in $(seq 1 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
bad "metrics address in use" "metrics.listen = \"127.0.0.1:[0-9]+\": .*in use" "${EAL[@]}" -- "${NOSOCK[@]}" --set "metrics.listen=127.0.0.1:$(cat "$WORK/port")"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null

echo "== syslog"
bad "syslog socket missing (--check)" "alerts.syslog = true: $WORK/nolog does not exist: no syslog daemon \(install and start one" \
  "${EAL[@]}" -- --check --set alerts.syslog=true --set "alerts.syslog_socket=$WORK/nolog"
bad "syslog socket missing (run)" "alerts.syslog = true: $WORK/nolog does not exist" "${EAL[@]}" -- "${NOSOCK[@]}" --set alerts.syslog=true --set "alerts.syslog_socket=$WORK/nolog"
# /dev/log itself hidden (a mount namespace of its own, an empty directory over /dev)
out=$(unshare -m bash -c 'mount -t tmpfs none /dev 2>/dev/null && exec "$0" -l 0 --no-huge --no-shconf -m 256 --no-pci --no-telemetry --vdev net_null0 -- --check --set alerts.syslog=true' "$HAKA" 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "^haka: error: alerts.syslog = true: /dev/log does not exist: no syslog daemon" <<<"$out" ||
  fail "/dev/log hidden: rc $rc: $out"
echo "  /dev/log hidden: $out"; n=$((n + 1))
printf '%s' "" > "$WORK/notasocket"
bad "syslog path not a socket" "$WORK/notasocket is not a socket" "${EAL[@]}" -- --check --set alerts.syslog=true --set "alerts.syslog_socket=$WORK/notasocket"

echo "== EAL"
bad "EAL: unknown option" "EAL argument '--bogus': unknown option" --bogus "${EAL[@]}" -- --check
bad "EAL: lcore that does not exist" "lcore 4000 does not exist" -l 4000 --no-huge -- --check
bad "EAL: failure explained" "EAL initialisation failed: .*; cause: EAL argument '--bogus': unknown option" --bogus "${EAL[@]}" -- "${NOSOCK[@]}"
# hugepages not mounted (in a mount namespace of its own)
out=$(unshare -m bash -c 'umount -a -t hugetlbfs 2>/dev/null; exec "$0" -l 0 --no-pci --no-telemetry --vdev net_null0 -- --set "control.socket=\"\""' "$HAKA" 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "hugepages are not mounted (no hugetlbfs): mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages" <<<"$out" ||
  fail "hugepages not mounted: rc $rc: $out"
echo "  hugepages not mounted: $out"; n=$((n + 1))
# not root
chmod 755 "$WORK"; cp "$HAKA" "$WORK/haka"; chmod 755 "$WORK/haka"
out=$(cd / && setpriv --reuid=65534 --regid=65534 --clear-groups "$WORK/haka" -l 0 --no-pci --no-telemetry --vdev net_null0 -- --set 'control.socket=""' 2>&1); rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "cause: haka is not running as root: run it as root" <<<"$out" || fail "not root: rc $rc: $out"
echo "  not root: $out"; n=$((n + 1))
# a device bound to a kernel driver, not a DPDK one
dev=
for d in /sys/bus/pci/devices/*; do
  drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
  case "$drv" in ""|vfio-pci|igb_uio|uio_pci_generic) ;; *) dev=$(basename "$d"); break ;; esac
done
if [ -n "$dev" ]; then
  bad "device not bound (--check)" "PCI device $dev is bound to the kernel driver .*: dpdk-devbind.py --bind=vfio-pci $dev" -l 0 --no-huge -m 256 -a "$dev" -- --check
  bad_last "device not bound (run)" "no DPDK ports: PCI device $dev is bound to the kernel driver .*dpdk-devbind.py --bind=vfio-pci $dev" \
    -l 0 --no-huge -m 256 --no-telemetry -a "$dev" -- "${NOSOCK[@]}"
fi
bad "no such device" "no PCI device 0000:7f:1f.7" -l 0 --no-huge -a 0000:7f:1f.7 -- --check

echo "checks: $n passed, 0 failed"
echo "PASS checks"
