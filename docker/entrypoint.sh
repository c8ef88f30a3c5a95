#!/bin/sh
# Entrypoint: `docker run ... haka [EAL args] -- [app args]`, as the binary.
# `hakapcap ...` (the offline tool) or `hakactl ...` as the first argument runs that tool.
set -e
case "${1:-}" in
  hakapcap | hakactl) tool=$1; shift; exec "/usr/local/bin/$tool" "$@" ;;
esac
# (the control socket's directory: /run is empty in a new container)
mkdir -p /run/haka
if ! mountpoint -q /dev/hugepages 2>/dev/null; then
  echo "haka-entrypoint: /dev/hugepages is not mounted; pass -v /dev/hugepages:/dev/hugepages, or use EAL --no-huge" >&2
fi
exec /usr/local/bin/haka "$@"
