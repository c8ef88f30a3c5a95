#!/usr/bin/env bash
# The main job on its embedded default: a client and a server in two network
# namespaces, joined only through haka's two net_tap ports (inline, bump in
# the wire). Real curl traffic goes through it; then haka's stats are shown.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
cargo build --release --bins
. scripts/lab.sh
trap lab_down EXIT

STATS=$(mktemp /tmp/haka-demo-stats.XXXXXX.json)
echo "== starting haka between namespaces hkdemo-c (198.18.0.1) and hkdemo-s (198.18.0.2)"
lab_up hkdemo "$ROOT/target/release/haka" --stats-file "$STATS"
sed -n '/^port /p;/^ready:/p' "$LAB_DIR/haka.log"
www="$LAB_DIR/www"; mkdir -p "$www"
echo "hello from the server side of haka" > "$www/index.html"
head -c 2000000 /dev/urandom > "$www/blob.bin"
lab_http_server "$www"

echo "== curl http://$LAB_SERVER_IP:8080/index.html (from the client namespace, through haka)"
lab_client curl -sS -m 10 -w 'HTTP %{http_code}, %{size_download} bytes\n' "http://$LAB_SERVER_IP:8080/index.html"
echo "== 20 downloads of a 2 MB file"
for i in $(seq 1 20); do
  lab_client curl -sS -m 20 -o /dev/null -w '%{http_code} ' "http://$LAB_SERVER_IP:8080/blob.bin"
done
echo
echo "== ping"
lab_client ping -c 3 -i 0.2 -W 1 "$LAB_SERVER_IP" | tail -2

lab_stop_haka
echo "== haka's final stats (SIGINT: drained, tx flushed)"
grep '^final:' "$LAB_DIR/haka.log"
echo "== stats file $STATS"
/usr/bin/python3 -c "
import json,sys
s=json.load(open('$STATS')); t=s['totals']
print('rx %d, tx %d, dropped %d, malformed %d, flows %d, mempool in use %d, per port %s' % (t['rx'], t['tx'], t['dropped'], t['malformed'], t['flows_created'], s['mempool']['in_use'], [(p['name'], p['rx'], p['tx']) for p in s['ports']]))"
