#!/usr/bin/env bash
# Checks docker/Dockerfile's runtime stage for real without a Docker engine: builds its
# root filesystem with debootstrap (Debian 12 bookworm, minbase, as the debian:12 image;
# from this machine's apt mirror), installs the stage's package list read from the
# Dockerfile, applies the stage's COPY steps (build-stage paths /src/... taken from this
# checkout, so build first: cargo build --release --bins) and runs its RUN steps (the
# image's own check, docker/check-image.sh) in a chroot. The bare Debian rootfs is cached
# in /var/cache/haka-image (HAKA_IMAGE_CACHE); each run works on a fresh copy of it.
# usage: scripts/check_image.sh          (needs root, debootstrap: scripts/setup.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKERFILE=$ROOT/docker/Dockerfile
CACHE=${HAKA_IMAGE_CACHE:-/var/cache/haka-image}
fail() { echo "check_image: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || fail "debootstrap not installed (scripts/setup.sh)"
t0=$(date +%s)

# The runtime stage: from `FROM ... AS runtime` to the end, continuation lines joined.
stage=$(awk '/^FROM .* AS runtime/ {on=1; next} /^FROM / {on=0} on' "$DOCKERFILE" | sed -e ':a' -e '/\\$/{N; s/\\\n//; ba}')
[ -n "$stage" ] || fail "$DOCKERFILE: no 'FROM ... AS runtime' stage"
pkgs=$(grep -m1 '^RUN apt-get update && apt-get install' <<<"$stage" | sed -e 's/.*--no-install-recommends//' -e 's/&&.*//')
[ -n "$(echo $pkgs)" ] || fail "$DOCKERFILE: no apt-get install in the runtime stage"

# The mirror apt uses here (deb822 or one-line sources).
mirror=$(grep -hoE '^URIs: *\S+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
[ -n "$mirror" ] || mirror=$(grep -hoE '^deb +\S+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}

base=$CACHE/bookworm-minbase
if [ ! -f "$base/.complete" ]; then
  echo "check_image: debootstrap bookworm (minbase) from $mirror into $base (once)"
  rm -rf "$base"; mkdir -p "$CACHE"
  debootstrap --variant=minbase bookworm "$base" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: $(tail -3 "$CACHE/debootstrap.log")"
  # (the same suites as the machine's: security updates too, as debian:12 has)
  sec=${mirror%/debian*}/debian-security
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' "$mirror" "$mirror" "$sec" >"$base/etc/apt/sources.list"
  touch "$base/.complete"
fi

work=$(mktemp -d /var/tmp/haka-image.XXXXXX)
rootfs=$work/rootfs
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cp -a "$base" "$rootfs"
for m in proc sys dev; do
  mkdir -p "$rootfs/$m"
  case $m in
    proc) mount -t proc proc "$rootfs/proc" ;;
    *) mount --rbind "/$m" "$rootfs/$m"; mount --make-rslave "$rootfs/$m" ;;
  esac
  mounted+=("$rootfs/$m")
done
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# apt's downloaded packages are kept between runs (the rootfs copy is fresh each time)
mkdir -p "$CACHE/archives/partial" "$rootfs/var/cache/apt/archives"
mount --bind "$CACHE/archives" "$rootfs/var/cache/apt/archives"; mounted+=("$rootfs/var/cache/apt/archives")

echo "check_image: installing the runtime stage's packages:" $pkgs
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive sh -c \
  "apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null" \
  || fail "apt-get install in the runtime rootfs failed"
rm -rf "$rootfs/var/lib/apt/lists/"*

# COPY steps: [--from=build] SRC... DEST; /src/ is this checkout (the build stage's WORKDIR).
while read -r line; do
  set -- $line
  shift
  [ "${1:-}" = "--from=build" ] && shift
  args=("$@"); dest=${args[-1]}; unset 'args[-1]'
  for src in "${args[@]}"; do
    src=${src#/src/}
    [ -e "$ROOT/$src" ] || fail "COPY $src: not found in $ROOT (build first?)"
    case $dest in */) mkdir -p "$rootfs$dest" ;; *) mkdir -p "$rootfs$(dirname "$dest")" ;; esac
    if [ -d "$ROOT/$src" ]; then cp -a "$ROOT/$src/." "$rootfs$dest"; else cp -a "$ROOT/$src" "$rootfs$dest"; fi
  done
done < <(grep '^COPY ' <<<"$stage")

# RUN steps after the package install: the image's own check.
t1=$(date +%s)
while read -r cmd; do
  echo "check_image: RUN $cmd"
  chroot "$rootfs" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh -c "$cmd" \
    || fail "RUN $cmd"
done < <(grep '^RUN ' <<<"$stage" | grep -v 'apt-get install' | sed 's/^RUN //')
echo "check_image: PASS ($(( t1 - t0 ))s to build the rootfs, $(( $(date +%s) - t1 ))s for the check)"
