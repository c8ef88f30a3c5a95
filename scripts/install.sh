#!/usr/bin/env bash
# Installs haka from this checkout's release build (cargo build --release --bins):
#   PREFIX/bin/{haka,hakapcap,hakactl}      (PREFIX=/usr/local: hakapcap on PATH)
#   PREFIX/share/haka/rules/*.lua           sample rules (README's commands)
#   PREFIX/share/doc/haka/README.md
#   SYSCONFDIR/haka/*.toml                  (SYSCONFDIR=/etc) an existing file is kept;
#                                           the shipped one is put beside it as FILE.dist
#   UNITDIR/haka.service                    (UNITDIR=/etc/systemd/system) from packaging/
# DESTDIR=DIR stages everything under DIR (packaging, tests). Safe to run again.
# usage: [DESTDIR=DIR] [PREFIX=/usr/local] [SYSCONFDIR=/etc] scripts/install.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
DESTDIR=${DESTDIR:-}
BIN=$ROOT/target/release
fail() { echo "install: error: $*" >&2; exit 1; }

for b in haka hakapcap hakactl; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b not built: run cargo build --release --bins first"
done
install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/share/haka/rules" "$DESTDIR$PREFIX/share/doc/haka" \
  "$DESTDIR$SYSCONFDIR/haka" "$DESTDIR$UNITDIR"
install -m 0755 "$BIN/haka" "$BIN/hakapcap" "$BIN/hakactl" "$DESTDIR$PREFIX/bin/"
install -m 0644 "$ROOT"/rules/*.lua "$DESTDIR$PREFIX/share/haka/rules/"
install -m 0644 "$ROOT/README.md" "$DESTDIR$PREFIX/share/doc/haka/README.md"
for f in "$ROOT"/conf/*.toml; do
  dest=$DESTDIR$SYSCONFDIR/haka/$(basename "$f")
  if [ -e "$dest" ] && ! cmp -s "$f" "$dest"; then
    install -m 0644 "$f" "$dest.dist"
    echo "install: kept $SYSCONFDIR/haka/$(basename "$f") (yours); the shipped one is $SYSCONFDIR/haka/$(basename "$f").dist"
  else
    install -m 0644 "$f" "$dest"
  fi
done
# the unit names the installed paths
sed -e "s#/usr/local/bin/#$PREFIX/bin/#g" -e "s#/usr/local/share/#$PREFIX/share/#g" \
    -e "s#/etc/haka/#$SYSCONFDIR/haka/#g" "$ROOT/packaging/haka.service" >"$DESTDIR$UNITDIR/haka.service.tmp"
chmod 0644 "$DESTDIR$UNITDIR/haka.service.tmp"
mv -f "$DESTDIR$UNITDIR/haka.service.tmp" "$DESTDIR$UNITDIR/haka.service"
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install: haka, hakapcap, hakactl in $PREFIX/bin; rules in $PREFIX/share/haka/rules; config in $SYSCONFDIR/haka; unit $UNITDIR/haka.service${DESTDIR:+ (under $DESTDIR)}"
[ -n "$DESTDIR" ] || echo "install: next: edit $SYSCONFDIR/haka/haka.toml ([eal] args, [rules] file), then systemctl enable --now haka"
