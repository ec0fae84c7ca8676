#!/usr/bin/env bash
# Captures the golden files in this directory from a real Postfix (Debian's
# postfix package) running as a separate instance under $W, with its own
# config directory, no inet listener (port 25 stays free) and delivery to two
# local fake SMTP peers (smtpfake.py). Run as root; see README.md.
#   tests/golden/postfix/capture.sh [WORKDIR]
set -euo pipefail
G="$(cd "$(dirname "$0")" && pwd)"
W="${1:-/tmp/postfix-golden}"
TEMPFAIL_PORT=2601 STALL_PORT=2602
rm -rf "$W"; mkdir -p "$W/etc" "$W/spool" "$W/data" "$W/tables"
chown postfix "$W/data"
# Debian's master.cf without the smtp inet listener and without chroot.
sed -e 's/^smtp      inet/#smtp      inet/' /etc/postfix/master.cf |
    awk '/^[a-z]/ && NF>=8 && $5=="y" {$5="n"} {print}' > "$W/etc/master.cf"
cat > "$W/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $W/spool
data_directory = $W/data
myhostname = relay.test.example
mydomain = test.example
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
maillog_file = $W/maillog
maillog_file_prefixes = $W
smtputf8_enable = yes
transport_maps = texthash:$W/etc/transport
smtp_tls_security_level = none
minimal_backoff_time = 3000s
maximal_backoff_time = 4000s
queue_run_delay = 3000s
CF
cat > "$W/etc/transport" <<T
tempfail.test smtp:[127.0.0.1]:$TEMPFAIL_PORT
stall.test smtp:[127.0.0.1]:$STALL_PORT
refused.test smtp:[127.0.0.1]:1
T
python3 "$G/smtpfake.py" tempfail $TEMPFAIL_PORT & P1=$!
python3 "$G/smtpfake.py" stall $STALL_PORT & P2=$!
export MAIL_CONFIG="$W/etc"
cleanup() { postfix -c "$W/etc" stop >/dev/null 2>&1 || true; kill $P1 $P2 2>/dev/null || true; }
trap cleanup EXIT
postfix -c "$W/etc" check
postfix -c "$W/etc" start
sleep 1
postconf -d mail_version | sed 's/^/# /' > "$G/VERSION"

# ---- the queue -------------------------------------------------------------
msg() { printf 'From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s@golden.test>\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n\n%s\n' "$1" "$2" "$3" "$4" "$5"; }
qid() { grep "message-id=<$1@golden.test>" "$W/maillog" | sed 's/.*: \([0-9A-F]*\): message-id.*/\1/'; }
msg alice@example.com "bob@tempfail.test, carol@tempfail.test, dave@refused.test" "Several recipients" m1 "Body line 1
Body line 2" | sendmail -f alice@example.com bob@tempfail.test carol@tempfail.test dave@refused.test
sleep 1.1
msg very.long.sender.address.for.layout.testing@subdomain.example-company.com erin@tempfail.test Held m2 "held body" |
    sendmail -f very.long.sender.address.for.layout.testing@subdomain.example-company.com erin@tempfail.test
sleep 1.1
msg MAILER-DAEMON frank@tempfail.test "Undelivered Mail Returned to Sender" m3 "bounce body" | sendmail -f '<>' frank@tempfail.test
sleep 1.1
msg 'jörg@exämple.test' 'zoë@tempfail.test' 'UTF-8 Grüße' m4 'Grüße aus Köln' | sendmail -f 'jörg@exämple.test' 'zoë@tempfail.test'
sleep 1.1
msg alice@example.com grace@stall.test Active m5 "active body" | sendmail -f alice@example.com grace@stall.test
sleep 3
M1=$(qid m1) M2=$(qid m2) M3=$(qid m3) M4=$(qid m4) M5=$(qid m5)
postsuper -h "$M2" 2> "$G/postsuper-h.stderr"
postqueue -p > "$G/mailq.txt"
mailq > "$G/mailq-sendmail.txt"
postqueue -j > "$G/postqueue-j.jsonl"
printf 'M1 %s\nM2 %s\nM3 %s\nM4 %s\nM5 %s\n' "$M1" "$M2" "$M3" "$M4" "$M5" > "$G/ids.txt"
postcat -q "$M1" > "$G/postcat-m1.txt"
postcat -q "$M3" > "$G/postcat-m3.txt"
for f in e h b eh eb hb; do postcat -$f -q "$M4" > "$G/postcat-m4-$f.txt"; done
{ postcat -q NOSUCHID; echo "exit $?"; } > "$G/postcat-missing.txt" 2>&1 || true

# ---- postsuper ---------------------------------------------------------------
ps_run() { # name, stdin, args...
    local name=$1 input=$2; shift 2
    { printf '%s' "$input" | postsuper "$@"; echo "exit $?"; } > "$G/postsuper-$name.txt" 2>&1 || true
    postqueue -j | sed 's/"arrival_time": [0-9]*/"arrival_time": 0/' > "$G/postsuper-$name.queue.jsonl"
}
ps_run H-m2 "" -H "$M2"
ps_run h-all-deferred "" -h ALL deferred
ps_run H-stdin "$M1
$M3
" -H -
ps_run r-m3 "" -r "$M3"
sleep 2
ps_run d-missing "" -d 0123456789A
ps_run d-badqueue "" -d ALL nosuchqueue
ps_run d-m1 "" -d "$M1"
ps_run d-stdin "$M4
" -d -
ps_run d-all "" -d ALL
{ postqueue -p; echo "exit $?"; } > "$G/mailq-empty.txt" 2>&1

# ---- postconf ----------------------------------------------------------------
C="$W/pc"; mkdir -p "$C"
cp "$G/postconf-main.cf.in" "$C/main.cf"; cp "$G/postconf-master.cf.in" "$C/master.cf"
pc() { local name=$1; shift; { postconf -c "$C" "$@"; echo "exit $?"; } > "$G/postconf-$name.txt" 2>&1 || true; }
pc n -n
pc names relayhost myorigin mynetworks_style nosuch_parameter
pc x -x relay_domains myorigin
pc h -h relayhost
pc M -M
pc M-smtp -M smtp/inet
pc M-missing -M nosuch
postconf -d $(cat "$G/postconf-d.names") > "$G/postconf-d.txt"
pc e -e 'relayhost = [smtp.office365.com]:587' 'smtp_tls_security_level=encrypt' 'new_parameter = added'
cp "$C/main.cf" "$G/postconf-e.main.cf"
cp "$G/postconf-main.cf.in" "$C/main.cf"
pc X -X mynetworks smtpd_relay_restrictions
cp "$C/main.cf" "$G/postconf-X.main.cf"
cp "$G/postconf-main.cf.in" "$C/main.cf"
pc comment -# mynetworks relayhost
cp "$C/main.cf" "$G/postconf-comment.main.cf"

# ---- postmap -----------------------------------------------------------------
T="$W/tables"
cp "$G/postmap-"*.in "$T/"
pm() { local name=$1 input=$2; shift 2; { printf '%s' "$input" | postmap "$@"; echo "exit $?"; } > "$G/postmap-$name.txt" 2>&1 || true; }
pm build "" "hash:$T/postmap-transport.in"
pm q-found "" -q contoso.com "hash:$T/postmap-transport.in"
pm q-missing "" -q nosuch.example "hash:$T/postmap-transport.in"
pm q-texthash "" -q .sub.contoso.com "texthash:$T/postmap-transport.in"
pm q-stdin "contoso.com
nosuch.example
fabrikam.com
" -q - "texthash:$T/postmap-transport.in"
pm q-cidr "" -q 10.1.2.3 "cidr:$T/postmap-cidr.in"
pm q-regexp "" -q scanner7@contoso.com "regexp:$T/postmap-regexp.in"
pm q-inline "" -q b 'inline:{a=1, b=2}'
pm q-inline-spaces "" -q b 'inline:{ a = 1, b = 2 }'
pm q-static "" -q anything 'static:fixed value'
pm bad "" "hash:$T/postmap-bad.in"
pm q-bad "" -q good "texthash:$T/postmap-bad.in"
pm missing-file "" "hash:$T/no-such-file"
sed -i "s#$W#WORKDIR#g" "$G"/postmap-*.txt "$G"/postconf-*.txt
echo "captured into $G"
