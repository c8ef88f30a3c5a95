#!/usr/bin/env bash
# The SMTP dissector written in Lua (rules/smtp.lua) and its spam filter
# (rules/smtp_spam.lua) with real mail: Python's smtplib in the client namespace sends
# mails to a real SMTP server (aiosmtpd, Debian's python3-aiosmtpd) in the server
# namespace, through haka. Mails holding a banned keyword are refused (the client sees
# the connection reset; the server never receives them), the others arrive byte for byte;
# haka's alert output names the rule, and the dissector parses the real dialogue without
# a protocol error.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lab.sh"
HAKA=${HAKA:-$ROOT/target/release/haka}
PY=/usr/bin/python3
trap lab_down EXIT
fail() { echo "FAIL lab_smtp: $*"; [ -n "${LAB_DIR:-}" ] && tail -30 "$LAB_DIR/haka.log"; exit 1; }

"$PY" -c 'import aiosmtpd' 2>/dev/null || fail "python3-aiosmtpd is not installed (scripts/setup.sh)"

WORK=$(mktemp -d /tmp/haka-lab-smtp.XXXXXX)
STATS="$WORK/stats.json"
printf '[alerts]\nstdout = true\n[control]\nsocket = ""\n' > "$WORK/haka.toml"
lab_up "hks$$" "$HAKA" -c "$WORK/haka.toml" -r "$ROOT/rules/smtp_spam.lua" --stats-file "$STATS" ||
  fail "lab did not come up"

# The server: every mail it accepts is saved as it received it (after the SMTP dot
# unstuffing), one file per mail, named after its Subject.
mkdir -p "$WORK/inbox"
cat > "$WORK/server.py" <<'PY'
import os, sys, time
from aiosmtpd.controller import Controller

addr, inbox = sys.argv[1], sys.argv[2]

class Save:
    async def handle_DATA(self, server, session, envelope):
        subject = "none"
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"subject: "):
                subject = line[9:].decode("ascii", "replace").strip().replace("/", "_")
                break
        with open(os.path.join(inbox, subject + ".eml"), "wb") as f:
            f.write(envelope.content)
        return "250 OK saved"

c = Controller(Save(), hostname=addr, port=25)
c.start()
sys.stderr.write("listening %s:25\n" % addr)
sys.stderr.flush()
time.sleep(120)  # the lab never lasts that long; lab_down kills it before
c.stop()
PY
ip netns exec "$LAB_NS_S" "$PY" "$WORK/server.py" "$LAB_SERVER_IP" "$WORK/inbox" > "$LAB_DIR/smtp.log" 2>&1 &
LAB_PIDS+=($!)
for i in $(seq 1 100); do
  grep -q '^listening' "$LAB_DIR/smtp.log" 2>/dev/null && break
  kill -0 "${LAB_PIDS[-1]}" 2>/dev/null || break
  sleep 0.1
done
grep -q '^listening' "$LAB_DIR/smtp.log" || { cat "$LAB_DIR/smtp.log"; fail "smtp server did not start"; }

# The client: the mails, one connection each; their texts are written to outbox/ for the
# comparison, and each outcome printed as "SUBJECT sent" or "SUBJECT refused: ERROR".
mkdir -p "$WORK/outbox"
cat > "$WORK/client.py" <<'PY'
import os, random, smtplib, sys
server, outbox = sys.argv[1], sys.argv[2]
rnd = random.Random(25)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

def text(lines):
    return "".join(" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 14))) + "\r\n" for _ in range(lines))

def mail(subject, body):
    return ("From: alice@client.example\r\nTo: bob@server.example\r\nSubject: %s\r\n\r\n%s" % (subject, body)).encode()

mails = [
    ("hello", mail("hello", "Hello Bob,\r\n. a line starting with a dot\r\nsee you\r\n")),
    ("spam1", mail("spam1", "Cheap VIAGRA for you\r\n")),
    ("big", mail("big", text(3000))),
    ("spam2", mail("spam2", text(2000) + "you are our lottery winner, claim now\r\n" + text(50))),
    ("after", mail("after", "still delivered after the spam\r\n")),
]
for subject, msg in mails:
    with open(os.path.join(outbox, subject + ".eml"), "wb") as f:
        f.write(msg)
    try:
        s = smtplib.SMTP(server, 25, local_hostname="client.example", timeout=10)
        s.sendmail("alice@client.example", ["bob@server.example"], msg)
        s.quit()
        print(subject, "sent")
    except (smtplib.SMTPException, OSError) as e:
        print(subject, "refused:", type(e).__name__, e)
    sys.stdout.flush()
PY
lab_client "$PY" "$WORK/client.py" "$LAB_SERVER_IP" "$WORK/outbox" > "$WORK/client.log" 2>&1 ||
  { cat "$WORK/client.log"; fail "client failed"; }
cat "$WORK/client.log"

for m in hello big after; do
  grep -qx "$m sent" "$WORK/client.log" || fail "mail '$m' was not sent"
  [ -f "$WORK/inbox/$m.eml" ] || fail "mail '$m' did not reach the server"
  cmp -s "$WORK/outbox/$m.eml" "$WORK/inbox/$m.eml" || fail "mail '$m' differs on the server"
done
for m in spam1 spam2; do
  grep -q "^$m refused: " "$WORK/client.log" || fail "mail '$m' was not refused"
  [ -e "$WORK/inbox/$m.eml" ] && fail "mail '$m' reached the server"
done
n=$(ls "$WORK/inbox" | wc -l)
[ "$n" = 3 ] || fail "the server has $n mails, 3 expected: $(ls "$WORK/inbox")"

lab_stop_haka
[ "$LAB_HAKA_RC" = 0 ] || fail "haka exit code $LAB_HAKA_RC"
grep -q "description = smtp_spam: banned keyword 'viagra' in a mail, connection reset" "$LAB_DIR/haka.log" ||
  fail "no smtp_spam alert for viagra"
grep -q "description = smtp_spam: banned keyword 'lottery winner' in a mail, connection reset" "$LAB_DIR/haka.log" ||
  fail "no smtp_spam alert for 'lottery winner'"
"$PY" - "$STATS" <<'PY' || fail "stats check"
import json, sys
st = json.load(open(sys.argv[1]))
t = st["totals"]
s = t["stateful"]
assert s["lua_protocol_errors"] == 0, s   # real smtplib/aiosmtpd dialogues all parse
assert s["resets_sent"] == 4, s           # two mails, RST to both ends each
assert st["alerts"]["raised"] == 2, st["alerts"]
assert st["mempool"]["in_use"] == 0, st["mempool"]
print("lab_smtp: %d packets, %d dropped, %d resets sent, %d alerts" % (t["rx"], t["dropped"], s["resets_sent"], st["alerts"]["raised"]))
PY
rm -rf "$WORK"
echo "PASS lab_smtp"
