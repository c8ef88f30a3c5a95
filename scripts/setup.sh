#!/usr/bin/env bash
# Installs everything the build, tests, demo and benchmark need; safe to run again.
# Debian 12, as root. Mounts hugepages when it can, and says so when it cannot
# (everything also works with EAL's --no-huge).
set -euo pipefail

PKGS=(
  # DPDK 22.11 (headers + pkg-config file, PMDs, dpdk-testpmd, dpdk-devbind.py)
  libdpdk-dev dpdk dpdk-dev
  # bindgen: runtime libclang + clang's resource headers (see dpdk-notes)
  libclang-dev clang pkg-config build-essential
  # LuaJIT for the rules engine (mlua links the system LuaJIT)
  libluajit-5.1-dev
  # net_pcap, capture tooling
  libpcap-dev tcpdump tshark
  # test lab and benchmark (openssl: the TLS lab's self-signed certificate)
  iproute2 iputils-ping curl openssl python3 python3-scapy procps psmisc jq
  # the metrics test scrapes haka with a real Prometheus server; the Redis alert sink's
  # test sends to a real redis-server
  prometheus redis-server
  # the SMTP lab (tests/lab_smtp.sh): a real SMTP server; graphviz checks the dissector graphs
  python3-aiosmtpd graphviz
  # scripts/check_image.sh builds the Docker runtime stage's rootfs with debootstrap;
  # tests/install.sh verifies the systemd unit (systemd-analyze); tests/hakapcap_scale.sh
  # runs hakapcap on a pty (script, from bsdutils) and measures it (time)
  debootstrap systemd time bsdutils
  # TRex's client library (scripts/trex, tests/trex.sh) goes in a venv
  python3-venv
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # (Debian starts the prometheus service it installs: haka's test runs its own)
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus redis-server >/dev/null 2>&1 || true; fi
else
  echo "setup: apt packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

# cargo-fuzz: builds and runs the fuzz targets of fuzz/ (scripts/fuzz.sh; test.sh runs
# each briefly). Built from crates.io once (a few minutes), then found in ~/.cargo/bin.
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked --quiet
else
  echo "setup: cargo-fuzz present"
fi

# TRex's Python client library (PyPI lbr-trex-client: TRex's own trex.stl / trex.astf
# packages, with the scapy they bundle), in a venv of its own: tests/trex.sh loads the
# profiles of scripts/trex with it.
TREX_VENV=/opt/haka-trex-venv
if ! "$TREX_VENV/bin/python" -c 'import lbr_trex_client' >/dev/null 2>&1; then
  echo "setup: installing lbr-trex-client into $TREX_VENV"
  /usr/bin/python3 -m venv "$TREX_VENV"
  "$TREX_VENV/bin/pip" install -q 'lbr-trex-client==3.4.0'
else
  echo "setup: TRex client library present ($TREX_VENV)"
fi

# Hugepages: 1024 x 2 MiB, mounted at /dev/hugepages. Optional.
hp_total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)
if [ "${hp_total:-0}" -lt 1024 ]; then
  echo 1024 > /proc/sys/vm/nr_hugepages 2>/dev/null || true
  hp_total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)
fi
if ! mountpoint -q /dev/hugepages 2>/dev/null; then
  mkdir -p /dev/hugepages 2>/dev/null || true
  mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true
fi
# Leftover page files from runs without --in-memory keep pages reserved.
rm -f /dev/hugepages/*map_* 2>/dev/null || true
if mountpoint -q /dev/hugepages 2>/dev/null && [ "${hp_total:-0}" -gt 0 ]; then
  echo "setup: hugepages: ${hp_total} x 2 MiB mounted at /dev/hugepages"
else
  echo "setup: hugepages NOT available (could not reserve or mount); use EAL --no-huge --no-shconf -m 1024"
fi
