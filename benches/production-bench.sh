#!/usr/bin/env bash
# The production policy, measured: mtad running examples/production/mtad.kdl against a
# throw-away Postfix with the equivalent setup, the same load, in the same run.
#
#   benches/production-bench.sh [MESSAGES] [SESSIONS] [RUNS]     (default 5000 20 3)
#
#   MTAD_BIN=/path/to/mtad MTACTL_BIN=/path/to/mtactl   use these binaries instead of
#                                   building target/release/ (cargo build --release -q)
#   PERF_DATA=/path/perf.data       record mtad with perf (perf record -g) during the first
#                                   run's mtad load
#   PERF_CALLGRAPH="--call-graph dwarf,16384"   perf's call-graph option instead of -g
#                                   (the release build has no frame pointers: dwarf
#                                   gives whole stacks, at a larger perf.data)
#   KEEP_WORK=1                     keep the work directory (configurations, logs,
#                                   Postfix's maillog) for a look afterwards
#
# The load: smtp-source from 127.0.0.1 (an outside client for both systems), MESSAGES
# messages of one recipient in example.net over SESSIONS sessions, every one the same
# ~4 KB message from alice@example.org, DKIM-signed once by example.org (OpenDKIM, with
# a key from `mtactl dkim keygen`), so verification does real work on both sides.
# dnsmasq on 127.0.53.x:53 answers example.org's SPF (v=spf1 ip4:127.0.0.1 -all),
# DMARC (p=none) and DKIM key, and the client's PTR and A (iprev).
#
#   mtad    : examples/production copied as shipped, then the changes the script prints
#             (ports, spool, trusted network, rate limits, the LMTP next hop, the
#             resolver, one hook per stage from benches/production-hooks.rhai, OpenDKIM
#             verifying as a milter on the MX listener). Its own checks: SPF, DKIM,
#             DMARC, ARC, iprev, header_checks, the default rules, the reload suite.
#   Postfix : relay_domains = example.net, transport_maps to the same LMTP sink,
#             mynetworks narrowed the same way, the same header_checks (regexp:), the
#             same anvil limits raised the same way, smtpd_milters = OpenDKIM (mode v,
#             the same instance) and OpenDMARC, policyd-spf (spawn), peername lookups,
#             STARTTLS offered with the same certificate. The hooks have no Postfix
#             counterpart here: they are work only mtad does.
#   ceiling : smtp-source straight into smtp-sink, the same message file.
#
# Before timing, one signed message goes through each system into an smtp-sink dump
# and must carry the headers each system adds (mtad: its Authentication-Results with
# spf, dkim, dmarc and iprev pass, OpenDKIM's, the data hook's X-External; Postfix:
# OpenDKIM's and OpenDMARC's Authentication-Results and policyd-spf's Received-SPF),
# and a message that header_checks REJECTs must be refused by both; otherwise the bench
# fails.
#
# Prints one line per run and system (msg/s until smtp-source is done and until the
# sink has every message; CPU per message), then the medians and mtad/Postfix.
# CPU: from /proc, utime+stime+cutime+cstime in clock ticks before and after each
# timed load, of mtad's process; of Postfix's master and every process under it (the
# smtpd, cleanup, qmgr, lmtp, trivial-rewrite, anvil and spawn/policyd-spf processes:
# those that exit in between are in master's cutime/cstime, since master reaps
# them); and of the milters (OpenDKIM, which both use, and OpenDMARC).
#
# Needs (Debian): postfix (smtp-source, smtp-sink), opendkim, opendkim-tools, opendmarc,
# postfix-policyd-spf-python, dnsmasq-base, python3, util-linux (unshare), bc.
# Runs as root (Postfix; OpenDMARC and Postfix's policyd-spf read /etc/resolv.conf, so
# they run in a mount namespace where it names the bench's dnsmasq).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5000} S=${2:-20} RUNS=${3:-3}

if [ -z "${MTAD_BIN:-}" ] || [ -z "${MTACTL_BIN:-}" ]; then
  (cd "$here" && cargo build --release -q)
fi
MTAD_BIN=${MTAD_BIN:-$here/target/release/mtad}
MTACTL_BIN=${MTACTL_BIN:-$here/target/release/mtactl}
for tool in smtp-source smtp-sink postfix opendkim opendmarc policyd-spf dnsmasq unshare python3 bc; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "missing: $tool (see the header of $0)" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin:/sbin

W=$(mktemp -d /var/tmp/mtad-prodbench.XXXXXX)
chmod 755 "$W"   # smtp-sink writes as postfix, OpenDMARC and policyd-spf read as themselves
PF=$W/postfix
pids=()
cleanup() {
  postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "production-bench: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # host port: listening within 20 s
  for _ in $(seq 400); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
# clock ticks of CPU (user+system, with reaped children) of these PIDs and everything under them
cpu_ticks() {
  python3 - "$@" <<'PY'
import os, sys
stat = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        stat[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))
roots = [int(p) for p in sys.argv[1:]]
children = {}
for pid, (ppid, _) in stat.items():
    children.setdefault(ppid, []).append(pid)
total, todo = 0, list(roots)
while todo:
    pid = todo.pop()
    if pid in stat:
        total += stat[pid][1]
        todo.extend(children.get(pid, []))
print(total)
PY
}
HZ=$(getconf CLK_TCK)

echo "== production-bench: $N messages, $S sessions, $RUNS runs; mtad $MTAD_BIN"
echo "load before: $(uptime)"

# ---- ports and DNS ----
MX=$(free_port) SUB=$(free_port) SUBS=$(free_port) METRICS=$(free_port)
PFP=$(free_port) SINK=$(free_port) ODKIM=$(free_port) ODMARC=$(free_port)
NS=$(python3 -c '
import socket
for last in range(2, 250):
    ip = f"127.0.53.{last}"
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 53))
        t = socket.socket(); t.bind((ip, 53)); u.close(); t.close(); print(ip); break
    except OSError:
        pass')
[ -n "$NS" ] || fail "no 127.0.53.x address free for dnsmasq on port 53"

mkdir -p "$W/keys"
keygen=$("$MTACTL_BIN" dkim keygen --domain example.org --selector bench --out "$W/keys")
dkim_txt=$(printf '%s\n' "$keygen" | grep 'IN TXT' | grep -o '"[^"]*"' | tr -d '"\n')
case "$dkim_txt" in v=DKIM1*) ;; *) fail "mtactl dkim keygen printed no TXT record: $keygen" ;; esac
dnsmasq --no-daemon --no-resolv --no-hosts --keep-in-foreground --bind-interfaces --pid-file \
  --local=/#/ --listen-address="$NS" --port=53 \
  "--txt-record=example.org,v=spf1 ip4:127.0.0.1 -all" \
  "--txt-record=_dmarc.example.org,v=DMARC1; p=none" \
  "--txt-record=bench._domainkey.example.org,$dkim_txt" \
  --ptr-record=1.0.0.127.in-addr.arpa,mail.example.org \
  --host-record=mail.example.org,127.0.0.1 2>"$W/dnsmasq.log" &
pids+=($!)
wait_port "$NS" 53 || fail "dnsmasq did not start: $(cat "$W/dnsmasq.log")"
printf 'nameserver %s\n' "$NS" >"$W/resolv.conf"
chmod 644 "$W/resolv.conf"
# for the daemons that read /etc/resolv.conf: a mount namespace where it names dnsmasq
# (every step execs, so that $! of "${with_dns[@]}" daemon & is the daemon's PID)
with_dns=(unshare -m sh -c "mount --bind '$W/resolv.conf' /etc/resolv.conf && exec \"\$@\"" sh)

# ---- the message, signed once ----
python3 - "$W/message.crlf" "$W/reject.eml" <<'PY'
import sys, email.utils
head = [
    "From: Alice <alice@example.org>",
    "To: <rcpt@example.net>",
    "Subject: quarterly figures",
    "Date: " + email.utils.formatdate(localtime=False),
    "Message-ID: <production-bench@example.org>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
]
line = "The figures for the quarter are attached below, line by line, as agreed."
body = [f"{i:03d} {line}" for i in range(52)]   # ~4 KB
with open(sys.argv[1], "w", newline="") as f:
    f.write("\r\n".join(head + [""] + body) + "\r\n")
# the same message with a header that header_checks REJECTs
with open(sys.argv[2], "w") as f:
    f.write("\n".join(head[:2] + ["X-Mailer: Mega mass mailer 3.1"] + head[2:] + [""] + body) + "\n")
PY
printf 'Syslog no\nRequireSafeKeys false\nMode s\nDomain example.org\nSelector bench\nKeyFile %s\nSignatureAlgorithm rsa-sha256\nCanonicalization relaxed/relaxed\n' \
  "$W/keys/example.org.bench.key" >"$W/sign.conf"
opendkim -x "$W/sign.conf" -t "$W/message.crlf" -vvv >"$W/sign.out" 2>&1 || fail "opendkim did not sign: $(cat "$W/sign.out")"
# smtp-source -F sends each line of the file with CRLF: the file has LF endings
python3 - "$W/sign.out" "$W/message.crlf" "$W/message.eml" <<'PY'
import sys
out = open(sys.argv[1]).read()
start = "hname='DKIM-Signature' hvalue='"
at = out.find(start)
if at < 0:
    sys.exit("no DKIM-Signature in opendkim's output")
value = out[at + len(start):]
value = value[:value.find("'\n")]
message = open(sys.argv[2], newline="").read().replace("\r\n", "\n")
open(sys.argv[3], "w").write("DKIM-Signature: " + value + "\n" + message)
PY
echo "message: $(wc -c <"$W/message.eml") bytes, DKIM-signed by example.org (selector bench)"

# ---- the milters ----
# OpenDKIM verifying (both systems); 127.0.0.1 is not an internal host, so it verifies.
# Nameservers, not ResolverConfiguration: OpenDKIM 2.11 (with _FFR_VBR, as Debian builds
# it) reads that unbound configuration again at the end of every message, and
# libunbound's configuration parser is not thread-safe: under 20 concurrent sessions
# OpenDKIM died ("fatal flex scanner internal error--end of buffer missed").
# Its own authserv-id, so that mtad keeps its header (mtad removes those claiming
# mx.example.net) and OpenDMARC trusts it (TrustedAuthservIDs).
cat >"$W/opendkim.conf" <<EOF
Syslog no
Mode v
Socket inet:$ODKIM@127.0.0.1
AuthservID opendkim.mx.example.net
AlwaysAddARHeader yes
InternalHosts 192.0.2.254
DNSTimeout 5
Nameservers $NS
UserID opendkim
EOF
opendkim -f -x "$W/opendkim.conf" >"$W/opendkim.log" 2>&1 &
ODKIM_PID=$!; pids+=($ODKIM_PID)
# OpenDMARC (Postfix), refusing failures as the mtad policy's data stage does
mkdir -p "$W/opendmarc"
echo 192.0.2.254 >"$W/opendmarc/ignore.hosts"   # the default would ignore 127.0.0.1
cat >"$W/opendmarc/opendmarc.conf" <<EOF
Socket inet:$ODMARC@127.0.0.1
AuthservID mx.example.net
TrustedAuthservIDs mx.example.net, opendkim.mx.example.net
Background false
IgnoreHosts $W/opendmarc/ignore.hosts
RejectFailures true
UserID opendmarc
Syslog false
EOF
"${with_dns[@]}" opendmarc -f -c "$W/opendmarc/opendmarc.conf" >"$W/opendmarc.log" 2>&1 &
ODMARC_PID=$!; pids+=($ODMARC_PID)
wait_port 127.0.0.1 "$ODKIM" || fail "opendkim did not start: $(cat "$W/opendkim.log")"
wait_port 127.0.0.1 "$ODMARC" || fail "opendmarc did not start: $(cat "$W/opendmarc.log")"

# ---- mtad: examples/production, changed only where a bench must ----
C=$W/mtad-etc
cp -rL "$here/examples/production" "$C"
cp "$here/benches/production-hooks.rhai" "$C/hooks.rhai"
mkdir -p "$W/mtad"
echo "-- changes to examples/production for the bench (mtad):"
change() { # file, old text, new text, why: exactly one occurrence replaced
  python3 - "$C/$1" "$2" "$3" <<'PY' || fail "examples/production/$1 no longer has: $2"
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
PY
  printf '   %s: %s\n      - %s\n      + %s\n' "$1" "$4" "$2" "$3"
}
change mtad.kdl 'spool "/var/lib/mtad/spool"' "spool \"$W/mtad/spool\"" "the bench's own spool (same disk as Postfix's queue)"
change mtad.kdl 'control-socket "/run/mtad/control.sock"' "control-socket \"$W/mtad/control.sock\"" "its own control socket"
change mtad.kdl 'metrics "127.0.0.1:9187"' "metrics \"127.0.0.1:$METRICS\"" "a free port"
change mtad.kdl 'listen "mx" address="0.0.0.0:25"' \
  "milter \"opendkim\" \"inet:127.0.0.1:$ODKIM\"
listen \"mx\" address=\"127.0.0.1:$MX\" milters=\"opendkim\"" \
  "loopback, a free port; OpenDKIM verifying as a milter, as Postfix has it"
change mtad.kdl 'address="0.0.0.0:587"' "address=\"127.0.0.1:$SUB\"" "loopback, a free port"
change mtad.kdl 'address="0.0.0.0:465"' "address=\"127.0.0.1:$SUBS\"" "loopback, a free port"
change mtad.kdl 'networks "trusted" "127.0.0.0/8" "10.0.0.0/24"' 'networks "trusted" "10.0.0.0/24"' \
  "the load from 127.0.0.1 is an outside client: checked, limited, not trusted"
change mtad.kdl 'connections-per-ip 20' 'connections-per-ip 100' \
  "20 sessions reconnecting: room for connections still closing (Postfix: the same count limit)"
change mtad.kdl 'connections 60 per="1m"' 'connections 1000000 per="1m"' "counted, but never reached by the load"
change mtad.kdl 'messages 300 per="1h"' 'messages 1000000 per="1h"' "counted, but never reached by the load"
change mtad.kdl 'include "policies/default.kdl"' 'stage "connect" {
    hook "hooks.rhai"
}
stage "helo" {
    hook "hooks.rhai"
}
stage "mail" {
    hook "hooks.rhai"
}
stage "rcpt" {
    hook "hooks.rhai"    // before the defaults, which accept example.net
}
include "policies/default.kdl"' "one hook per stage (benches/production-hooks.rhai)"
change mtad.kdl '    header-checks file="header_checks"
}' '    header-checks file="header_checks"
    hook "hooks.rhai"
}' "one hook per stage: data"
change mtad.kdl 'stage "route" {
    transport "example.net" "lmtp:[10.0.0.25]:24"' "stage \"route\" {
    hook \"hooks.rhai\"    // before the transport, which routes all of example.net
    transport \"example.net\" \"lmtp:[127.0.0.1]:$SINK\"" \
  "one hook per stage: route; the mailbox server is the bench's LMTP smtp-sink"
change tests/production.kdl 'route "alice@example.net" "lmtp:[10.0.0.25]:24"' \
  "route \"alice@example.net\" \"lmtp:[127.0.0.1]:$SINK\"" "the reload suite (run at start) expects that route"
printf '\ndelivery {\n    dns-server "%s:53"    // the bench'"'"'s dnsmasq\n}\n' "$NS" >>"$C/mtad.kdl"
printf '   mtad.kdl: added delivery { dns-server "%s:53" }: the resolver of the checks and hooks is the bench'"'"'s dnsmasq\n' "$NS"

mtad_start() {
  "$MTAD_BIN" --allow-root --config "$C/mtad.kdl" >>"$W/mtad.log" 2>&1 &
  MTAD_PID=$!; pids+=($MTAD_PID)
  wait_port 127.0.0.1 "$MX" || fail "mtad did not start: $(tail -20 "$W/mtad.log")"
}

# ---- Postfix, the equivalent setup ----
mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
chown postfix:postfix "$PF/data"
cp "$C/header_checks" "$PF/etc/header_checks"
echo "example.net lmtp:[127.0.0.1]:$SINK" >"$PF/etc/transport"
cp "$C/certs/mx.example.net.crt" "$C/certs/mx.example.net.key" "$PF/etc/"
sed -e 's/^skip_addresses.*/skip_addresses = 10.0.0.0\/24/' -e 's/^HELO_reject.*/HELO_reject = False/' \
  -e 's/^Mail_From_reject.*/Mail_From_reject = False/' -e 's/^debugLevel.*/debugLevel = 0/' \
  /etc/postfix-policyd-spf-python/policyd-spf.conf >"$PF/etc/policyd-spf.conf"
chmod 644 "$PF/etc/policyd-spf.conf"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/spool
data_directory = $PF/data
maillog_file = $PF/maillog
myhostname = mx.example.net
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# as trusted "10.0.0.0/24": 127.0.0.1 is an outside client
mynetworks = 10.0.0.0/24
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = example.net
transport_maps = texthash:$PF/etc/transport
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600
header_checks = regexp:$PF/etc/header_checks
message_size_limit = 52428800
smtpd_milters = inet:127.0.0.1:$ODKIM, inet:127.0.0.1:$ODMARC
milter_default_action = tempfail
milter_protocol = 6
# anvil, as mtad's rate-limits and connections-per-ip
anvil_rate_time_unit = 60s
smtpd_client_connection_rate_limit = 1000000
smtpd_client_message_rate_limit = 1000000
smtpd_client_connection_count_limit = 100
smtpd_tls_security_level = may
smtpd_tls_cert_file = $PF/etc/mx.example.net.crt
smtpd_tls_key_file = $PF/etc/mx.example.net.key
lmtp_tls_security_level = none
biff = no
EOF
# Debian's master.cf, its smtpd on the bench's address, nothing chrooted (a chroot
# would need copies of /etc's files in the queue directory), and policyd-spf spawned
awk -v listen="127.0.0.1:$PFP" '
  $1 == "smtp" && $2 == "inet" { $1 = listen }
  /^[a-z0-9]/ && NF >= 8 { $5 = "n" }
  { print }' /usr/share/postfix/master.cf.dist >"$PF/etc/master.cf"
echo "policyd-spf unix - n n - 0 spawn user=policyd-spf argv=/usr/bin/policyd-spf $PF/etc/policyd-spf.conf" >>"$PF/etc/master.cf"
postfix -c "$PF/etc" check >"$W/postfix-check.log" 2>&1 || fail "postfix check: $(cat "$W/postfix-check.log")"
"${with_dns[@]}" postfix -c "$PF/etc" start >"$W/postfix-start.log" 2>&1 || fail "postfix start: $(cat "$W/postfix-start.log")"
wait_port 127.0.0.1 "$PFP" || fail "postfix did not listen: $(tail "$PF/maillog" 2>/dev/null)"
PF_MASTER=$(tr -d ' ' <"$PF/spool/pid/master.pid")

# ---- the checks: a misconfigured system is not measured ----
# send FILE to PORT as alice@example.org -> rcpt@example.net; prints the last reply
send_one() {
  python3 - "$1" "$2" <<'PY'
import smtplib, sys
port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
try:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mail.example.org", timeout=60) as s:
        s.sendmail("alice@example.org", ["rcpt@example.net"], data)
        print("250 accepted")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode(errors="replace"))
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    print(code, text.decode(errors="replace"))
PY
}
# the signed message through PORT: the dump the sink got, headers unfolded
through() {
  local dir=$W/check-$1
  mkdir -p "$dir"; chmod 777 "$dir"
  # no -M 1: a sink that exits at once would not answer the relay, which would retry
  # the message later, into a timed run
  smtp-sink -L -u postfix -d "$dir/%M." 127.0.0.1:"$SINK" 16 >/dev/null 2>&1 & local sink=$!
  wait_port 127.0.0.1 "$SINK" || fail "smtp-sink did not start"
  local reply; reply=$(send_one "$2" "$W/message.eml")
  [ "${reply%% *}" = 250 ] || { kill "$sink"; fail "$1 refused the signed message: $reply"; }
  for _ in $(seq 600); do [ -n "$(ls "$dir")" ] && break; sleep 0.05; done
  sleep 1   # the sink's answer, the relay's QUIT
  kill "$sink"; wait "$sink" 2>/dev/null || true
  [ -n "$(ls "$dir")" ] || fail "$1 did not deliver the signed message to the sink in 30 s"
  cat "$dir"/* | python3 -c 'import sys; t = sys.stdin.read(); h = t.split("\n\n")[0]; print(h.replace("\n\t", " ").replace("\n ", " "))'
}
need() { # system, headers, header-line regexp
  grep -Eq "$3" <<<"$2" || { printf '%s\n' "$2" >&2; fail "$1: no header matching /$3/ in the message it delivered"; }
}
mtad_start
echo "-- check: the signed message through each system"
h=$(through mtad "$MX")
need mtad "$h" '^Authentication-Results: mx\.example\.net;.* spf=pass [^;]*smtp\.mailfrom=alice@example\.org'
need mtad "$h" '^Authentication-Results: mx\.example\.net;.* dkim=pass [^;]*header\.d=example\.org'
need mtad "$h" '^Authentication-Results: mx\.example\.net;.* dmarc=pass [^;]*header\.from=example\.org'
need mtad "$h" '^Authentication-Results: mx\.example\.net;.* iprev=pass'
need mtad "$h" '^Authentication-Results: opendkim\.mx\.example\.net; dkim=pass (\([^)]*\) )?header\.d=example\.org'
need mtad "$h" '^X-External: yes'
grep -E '^(Authentication-Results|X-External)' <<<"$h" | sed 's/^/   mtad: /' | cut -c1-160
h=$(through postfix "$PFP")
need postfix "$h" '^Authentication-Results: opendkim\.mx\.example\.net; dkim=pass (\([^)]*\) )?header\.d=example\.org'
need postfix "$h" '^Authentication-Results: mx\.example\.net; dmarc=pass [^;]*header\.from=example\.org'
need postfix "$h" '^Received-SPF: Pass \(mailfrom\)'
grep -E '^(Authentication-Results|Received-SPF)' <<<"$h" | sed 's/^/   postfix: /' | cut -c1-160
echo "-- check: a message header_checks REJECTs (X-Mailer: Mega mass mailer)"
for sys in "mtad $MX" "postfix $PFP"; do
  set -- $sys
  reply=$(send_one "$2" "$W/reject.eml")
  case "$reply" in 5*) echo "   $1: $reply" ;; *) fail "$1 did not refuse the header_checks REJECT: $reply" ;; esac
done

# ---- timed runs ----
# label, port, daemon pids (CPU); appends "label accept e2e cpu-µs/msg milter-µs/msg status"
measure() {
  local label=$1 port=$2 own=$3 milters=$4 sink t0 t1 t2 c0 c1 m0 m1 rc=0 src=0
  if [ "$label" = ceiling ]; then
    smtp-sink -u postfix 127.0.0.1:"$SINK" 1024 >/dev/null 2>&1 & sink=$!
  else
    smtp-sink -L -u postfix -M "$N" 127.0.0.1:"$SINK" 1024 >/dev/null 2>&1 & sink=$!
  fi
  wait_port 127.0.0.1 "$SINK" || fail "smtp-sink did not start"
  c0=$(cpu_ticks $own); m0=$(cpu_ticks $milters)
  t0=$(now)
  smtp-source -4 -N -s "$S" -m "$N" -F "$W/message.eml" -M mail.example.org \
    -f alice@example.org -t rcpt@example.net 127.0.0.1:"$port" >"$W/source.log" 2>&1 || rc=$?
  t1=$(now)
  if [ "$label" = ceiling ]; then
    kill "$sink" 2>/dev/null; wait "$sink" 2>/dev/null || true
  else
    ( sleep 600; kill "$sink" 2>/dev/null ) >/dev/null 2>&1 & local wd=$!
    wait "$sink" || src=$?
    kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null || true
  fi
  t2=$(now)
  c1=$(cpu_ticks $own); m1=$(cpu_ticks $milters)
  awk -v l="$label" -v n="$N" -v a="$(echo "$t1 - $t0" | bc)" -v e="$(echo "$t2 - $t0" | bc)" \
      -v c=$((c1 - c0)) -v m=$((m1 - m0)) -v hz="$HZ" -v rc="$rc" -v src="$src" -v own="$own" \
    'BEGIN { if (a <= 0) a = 0.01; if (e <= 0) e = 0.01
             cpu = own == "" ? "-" : sprintf("%.0f", c * 1e6 / hz / n)
             mil = own == "" ? "-" : sprintf("%.0f", m * 1e6 / hz / n)
             printf "%-8s %8.0f %8.0f %10s %10s %s\n", l, n / a, n / e, cpu, mil,
                    (rc == 0 && src == 0) ? "ok" : "FAILED(source=" rc ",sink=" src ")" }'
}
results=$W/results.txt; : >"$results"
echo "-- timed: $N messages of $(wc -c <"$W/message.eml") bytes, $S sessions (msg/s: accept = until smtp-source is done, e2e = until the sink has all; CPU µs per message: the system's own processes, the milters it uses)"
printf '%-6s %-8s %8s %8s %10s %10s\n' run system accept e2e cpu-µs milters-µs
for r in $(seq "$RUNS"); do
  line=$(measure ceiling "$SINK" "" ""); echo "$r      $line" | tee -a "$results"
  line=$(measure postfix "$PFP" "$PF_MASTER" "$ODKIM_PID $ODMARC_PID"); echo "$r      $line" | tee -a "$results"
  if [ -n "${PERF_DATA:-}" ] && [ "$r" = 1 ]; then
    perf record -q -F 499 ${PERF_CALLGRAPH:--g} -p "$MTAD_PID" -o "$PERF_DATA" >"$W/perf.log" 2>&1 & perf_pid=$!
  fi
  line=$(measure mtad "$MX" "$MTAD_PID" "$ODKIM_PID"); echo "$r      $line" | tee -a "$results"
  if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=; fi
  # the sink exits on the last message before answering it (-M): the relays defer it.
  # Deleted, as compare-postfix.sh does, so that no retry lands in a later run's sink.
  sleep 1
  postsuper -c "$PF/etc" -d ALL deferred >/dev/null 2>&1 || true
  "$MTACTL_BIN" queue delete -c "$C/mtad.kdl" --state deferred >>"$W/mtactl.log" 2>&1 || true
done
grep -q FAILED "$results" && echo "some runs FAILED: see above (smtp-source: $(tail -3 "$W/source.log"))" >&2
kill -0 "$MTAD_PID" 2>/dev/null || fail "mtad exited: $(tail "$W/mtad.log")"
med() { awk -v s="$1" -v c="$2" '$2 == s { print $c }' "$results" | sort -n |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "median msg/s (e2e): ceiling=$(med ceiling 4) postfix=$(med postfix 4) mtad=$(med mtad 4)  (accept: postfix=$(med postfix 3) mtad=$(med mtad 3))"
echo "median CPU µs/msg: postfix=$(med postfix 5) (+ OpenDKIM and OpenDMARC $(med postfix 6)) mtad=$(med mtad 5) (+ OpenDKIM $(med mtad 6))"
awk -v p="$(med postfix 4)" -v m="$(med mtad 4)" -v c="$(med ceiling 4)" -v pa="$(med postfix 3)" -v ma="$(med mtad 3)" \
  'BEGIN { printf "ratio mtad/postfix=%.2f (accept %.2f)  mtad/ceiling=%.2f\n", m / p, ma / pa, m / c }'
# mtad's warnings but the expected ones: --allow-root, the policy analysis on the rcpt
# hook (no suite case pins it), and each run's last message, which the sink leaves
# unanswered
grep -E '^\S+ +(WARN|ERROR) ' "$W/mtad.log" | grep -v -e 'running as root' -e 'hooks.rhai:rcpt` may relay' \
  -e 'rcpt@example.net>, relay=127.0.0.1.*status=deferred' >"$W/mtad-warnings.log" || true
if [ -s "$W/mtad-warnings.log" ]; then
  echo "mtad logged $(wc -l <"$W/mtad-warnings.log") unexpected warnings or errors, e.g.:" >&2
  head -3 "$W/mtad-warnings.log" >&2
fi
echo "load after: $(uptime)"
