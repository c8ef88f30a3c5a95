#!/usr/bin/env bash
# scripts/install.sh into a DESTDIR (issue 15 point 6): the binaries, rules, docs, config
# and systemd unit land where README says, a second run changes nothing and keeps an
# edited config, the unit passes systemd-analyze verify (with its paths pointed into the
# DESTDIR), and README's commands work with the installed files: hakapcap from PATH on
# a sample capture, haka --check on the installed config.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/haka-install.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL install: $*"; exit 1; }
D=$WORK/dest

DESTDIR=$D bash "$ROOT/scripts/install.sh" >"$WORK/out1" 2>&1 || fail "install.sh: $(cat "$WORK/out1")"
for f in usr/local/bin/haka usr/local/bin/hakapcap usr/local/bin/hakactl; do
  [ -x "$D/$f" ] || fail "$f not installed executable"
done
for f in usr/local/share/haka/rules/ipfilter.lua usr/local/share/haka/rules/empty.lua \
         usr/local/share/doc/haka/README.md etc/haka/haka.toml etc/haka/haka-strict.toml \
         etc/systemd/system/haka.service; do
  [ -f "$D/$f" ] || fail "$f not installed"
done
[ "$(ls "$D/usr/local/share/haka/rules" | wc -l)" = "$(ls "$ROOT"/rules/*.lua | wc -l)" ] || fail "not every sample rule installed"
cmp -s "$D/etc/haka/haka.toml" "$ROOT/conf/haka.toml" || fail "haka.toml differs from conf/"
unit=$D/etc/systemd/system/haka.service
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" || fail "unit: no ExecReload SIGHUP"
grep -q '^ExecStartPre=/usr/local/bin/haka --check -c /etc/haka/haka.toml$' "$unit" || fail "unit: no --check before start"
grep -q '^RequiresMountsFor=/dev/hugepages$' "$unit" && grep -q '^After=dev-hugepages.mount' "$unit" || fail "unit: no hugepage mount dependency"

# again: idempotent; an edited config is kept, the shipped one put beside it
echo "# local edit" >>"$D/etc/haka/haka.toml"
before=$(cd "$D" && find . -type f ! -name haka.toml -exec md5sum {} + | sort)
DESTDIR=$D bash "$ROOT/scripts/install.sh" >"$WORK/out2" 2>&1 || fail "second install.sh: $(cat "$WORK/out2")"
tail -1 "$D/etc/haka/haka.toml" | grep -q "# local edit" || fail "an edited /etc/haka/haka.toml was overwritten"
cmp -s "$D/etc/haka/haka.toml.dist" "$ROOT/conf/haka.toml" || fail "no haka.toml.dist beside the edited config"
grep -q "kept /etc/haka/haka.toml" "$WORK/out2" || fail "second run does not say it kept the config: $(cat "$WORK/out2")"
after=$(cd "$D" && find . -type f ! -name haka.toml ! -name haka.toml.dist -exec md5sum {} + | sort)
[ "$before" = "$after" ] || fail "second run changed files: $(diff <(echo "$before") <(echo "$after") | head -5)"

# another PREFIX: the unit names it
DESTDIR=$WORK/opt PREFIX=/opt/haka bash "$ROOT/scripts/install.sh" >/dev/null 2>&1 || fail "PREFIX=/opt/haka install"
grep -q '^ExecStart=/opt/haka/bin/haka -c /etc/haka/haka.toml$' "$WORK/opt/etc/systemd/system/haka.service" || fail "PREFIX not applied to the unit"
[ -x "$WORK/opt/opt/haka/bin/hakapcap" ] || fail "PREFIX: hakapcap not in /opt/haka/bin"

if command -v systemd-analyze >/dev/null; then
  mkdir -p "$WORK/verify"
  sed -e "s#/usr/local/#$D/usr/local/#g" -e "s#/etc/haka/#$D/etc/haka/#g" "$unit" >"$WORK/verify/haka.service"
  out=$(systemd-analyze verify "$WORK/verify/haka.service" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
else
  echo "install: systemd-analyze not found: unit not verified"
fi

# README's commands with the installed files
export PATH=$D/usr/local/bin:$PATH
[ "$(command -v hakapcap)" = "$D/usr/local/bin/hakapcap" ] || fail "hakapcap not found on PATH"
out=$(cd "$WORK" && hakapcap "$D/usr/local/share/haka/rules/ipfilter.lua" "$ROOT/tests/data/haka-pcaps/sample/filter/ipfilter.pcap" -o out.pcap 2>&1) \
  || fail "installed hakapcap: $out"
grep -q "ipfilter.pcap: 18 packets, 12 accepted, 6 dropped" <<<"$out" || fail "installed hakapcap: $(tail -1 <<<"$out")"
out=$(haka --no-huge --no-pci -m 256 --vdev net_null0 --vdev net_null1 -- --check -c "$D/etc/haka/haka.toml" \
      -r "$D/usr/local/share/haka/rules/ipfilter.lua" --set 'control.socket=""' 2>&1) || fail "installed haka --check: $out"
grep -q "configuration OK" <<<"$out" || fail "installed haka --check: $out"
haka --version | grep -q '^haka ' || fail "haka --version"
hakactl --socket "$WORK/none.sock" status >/dev/null 2>&1 && fail "hakactl status without haka succeeded"
echo "PASS install"
