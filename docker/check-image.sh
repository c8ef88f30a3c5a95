#!/bin/sh
# The runtime image's own check (docker/Dockerfile runs it as a build step;
# scripts/check_image.sh runs it in a debootstrapped copy of that stage): every binary
# and DPDK driver finds its libraries, haka prints its version and checks the shipped
# config, and hakapcap replays a sample capture through the DPDK datapath with the
# sample IP filter (18 packets: 6 from or to the blacklisted address dropped).
set -eu
fail() { echo "check-image: FAIL: $*" >&2; exit 1; }
for b in haka hakapcap hakactl; do
  p=$(command -v "$b") || fail "$b is not on PATH"
  ! ldd "$p" | grep 'not found' || fail "$p: missing libraries"
done
# (EAL loads every driver of this directory at start: one missing a library stops it)
n=0
for so in /usr/lib/*/dpdk/pmds-*/*.so.*; do
  [ -e "$so" ] || continue
  ! ldd "$so" | grep 'not found' || fail "$so: missing libraries"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no DPDK drivers in /usr/lib/*/dpdk/pmds-*"
echo "check-image: $n DPDK driver files load their libraries"
haka --version
hakactl --version
haka --no-huge --no-pci -m 256 --vdev net_null0 --vdev net_null1 -- --check -c /etc/haka/haka.toml --set 'control.socket=""'
out=$(hakapcap /usr/local/share/haka/rules/ipfilter.lua /usr/local/share/haka/samples/ipfilter.pcap -o /tmp/haka-check.pcap) \
  || fail "hakapcap: $out"
echo "$out" | tail -1
echo "$out" | grep -q "ipfilter.pcap: 18 packets, 12 accepted, 6 dropped" || fail "hakapcap: unexpected summary"
[ "$(stat -c %s /tmp/haka-check.pcap)" -gt 24 ] || fail "hakapcap wrote no packets"
rm -f /tmp/haka-check.pcap
echo "check-image: OK"
