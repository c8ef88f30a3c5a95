#!/bin/sh
# Entrypoint: `docker run ... haka [EAL args] -- [app args]`, as the binary.
# `hakapcap ...` as the first argument runs the offline tool instead.
set -e
if [ "${1:-}" = "hakapcap" ]; then
  shift
  exec /usr/local/bin/hakapcap "$@"
fi
if ! mountpoint -q /dev/hugepages 2>/dev/null; then
  echo "haka-entrypoint: /dev/hugepages is not mounted; pass -v /dev/hugepages:/dev/hugepages, or use EAL --no-huge" >&2
fi
exec /usr/local/bin/haka "$@"
