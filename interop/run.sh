#!/usr/bin/env bash
# Interop suite: the relay against real servers from Debian packages.
#
#   nsd        authoritative for a private test. tree with DNSSEC-signed and
#              unsigned zones (keys made with ldns-keygen, signed with
#              ldns-signzone, some RRSIGs broken on purpose);
#   unbound    the validating resolver, trust anchor = the DS of test.;
#   postfix    one receiving instance with one smtpd per MX host, each on its
#              own 127.x.y.z:25 with its own certificate or without STARTTLS,
#              delivering to a Maildir; one sending instance with
#              smtp_tls_security_level = dane as the reference column;
#   nginx      and the relay's own [inbound] listener serve MTA-STS policies.
#
# One message per scenario (interop/tool/scenarios.go) goes to the relay and
# to the reference Postfix with swaks; interop-tool scores the relay's outcome
# (delivered or not, via which MX, TLS or not, deferred rather than bounced or
# sent in cleartext), prints a table and "N passed, M failed". Exit status 1
# when a scenario fails, 2 when the suite itself could not run.
#
# Usage: sudo interop/run.sh        (root: it binds port 25/53/443 on loopback
#                                    addresses and installs missing packages)
# Environment:
#   INTEROP_NET=127.77.0   the /24 of 127.0.0.0/8 everything listens on
#   INTEROP_WAIT=120       seconds to wait for every message to settle
#   INTEROP_KEEP=1         keep the run directory (configs, logs, Maildir)
#   INTEROP_RELAY_SRC=DIR  build relay and relayctl from another tree (for
#                          example a copy with a deliberately broken check)
#
# Everything listens on INTEROP_NET.x only; unbound refuses every name
# outside test. and may not query any address outside 127.0.0.0/8; the
# relay and both Postfix instances run in private mount namespaces whose
# /etc/resolv.conf points at that unbound. Every daemon is stopped through
# its pid file when the script ends, whatever the outcome.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# postfix_services: the master.cf services every private Postfix needs.
. interop/postfix.sh
ROOT=$(pwd)
START=$(date +%s)

NET=${INTEROP_NET:-127.77.0}
WAIT=${INTEROP_WAIT:-120}
KEEP=${INTEROP_KEEP:-0}
SRC=${INTEROP_RELAY_SRC:-$ROOT}
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

die() {
  echo "interop: $*" >&2
  exit 2
}
step() { echo "== $*"; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0): it binds ports 25, 53 and 443 on $NET.x and installs packages"
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "INTEROP_NET=$NET is not the first three octets of a 127.0.0.0/8 address"

# ---------------------------------------------------------------- packages
PACKAGES=(nsd ldnsutils unbound bind9-dnsutils postfix swaks nginx curl)
made_policy_rc=0
remove_policy_rc() {
  if [ "$made_policy_rc" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    made_policy_rc=0
  fi
}
install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged services must not start (they would take ports 25, 53, 443 on
  # every address): invoke-rc.d asks policy-rc.d, and 101 means "no".
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# made by the relay interop suite while it installs packages\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy_rc=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  remove_policy_rc
  # Nor should they start at the next boot: disable the units of what was
  # just installed (by unit name; nothing already installed is touched).
  if command -v systemctl >/dev/null 2>&1; then
    local units=()
    for p in "${missing[@]}"; do
      case $p in
        nsd) units+=(nsd.service) ;;
        unbound) units+=(unbound.service unbound-resolvconf.service) ;;
        nginx) units+=(nginx.service) ;;
        postfix) units+=(postfix.service) ;;
      esac
    done
    if [ ${#units[@]} -gt 0 ]; then
      if [ -d /run/systemd/system ]; then
        systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
      else
        systemctl disable "${units[@]}" >/dev/null 2>&1 || true
      fi
    fi
  fi
}

# ---------------------------------------------------------------- run dir, teardown
run=""
# is_ours pid executable: the pid (from a pid file) still runs that program,
# so that a stale pid file never hits an unrelated process. The file's
# device and inode are compared, not its path: the path /proc gives for a
# process in another mount namespace (the relay runs under unshare -m) is
# not the one this shell sees when / is not that namespace's root, as in a
# chroot.
is_ours() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
    [ "$(stat -L -c %d:%i "/proc/$1/exe" 2>/dev/null)" = "$(stat -L -c %d:%i "$2" 2>/dev/null)" ]
}
wait_gone() { # name pid: wait up to 10s, then SIGKILL
  local i
  for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "interop: $1 (pid $2) did not stop on SIGTERM; SIGKILL" >&2
  kill -9 "$2" 2>/dev/null || true
}
stop_pid() { # name pid executable
  is_ours "$2" "$3" || return 0
  kill "$2" 2>/dev/null || true
  wait_gone "$1" "$2"
}
pidof_file() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }
cleanup() {
  local rc=$? pf pid
  set +e
  trap - EXIT INT TERM
  # A signal may arrive while a function's redirections are in force.
  exec 1>&7 2>&8
  [ "$rc" != 130 ] || echo "interop: interrupted; stopping everything" >&2
  remove_policy_rc
  if [ -n "$run" ] && [ -d "$run" ]; then
    stop_pid relay "$(pidof_file "$run/relay.pid")" "$run/bin/relay"
    for pf in pf-ref pf-rcv; do
      pid=$(pidof_file "$run/$pf/queue/pid/master.pid")
      if is_ours "$pid" "$(postconf -dh daemon_directory)/master"; then
        postfix -c "$run/$pf" stop >/dev/null 2>&1 || kill "$pid"
        wait_gone "postfix $pf" "$pid"
      fi
    done
    stop_pid nginx "$(pidof_file "$run/nginx.pid")" "$(command -v nginx)"
    stop_pid unbound "$(pidof_file "$run/unbound.pid")" "$(command -v unbound)"
    stop_pid nsd "$(pidof_file "$run/nsd.pid")" "$(command -v nsd)"
    if [ "$KEEP" = 1 ]; then
      echo "interop: run directory kept: $run"
    else
      rm -rf "$run"
      [ "$rc" = 0 ] || echo "interop: set INTEROP_KEEP=1 to keep configs, logs and Maildir for a look" >&2
    fi
  fi
  exit "$rc"
}
exec 7>&1 8>&2 # the script's own stdout and stderr, for cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages
for c in nsd nsd-checkconf ldns-keygen ldns-signzone ldns-key2ds unbound unbound-checkconf dig postfix swaks nginx curl unshare mount go; do
  command -v "$c" >/dev/null 2>&1 || die "$c not found"
done

mkdir -p /run/lock
exec 9>"/run/lock/relay-interop-$NET.lock"
flock -n 9 || die "another interop run uses $NET.x (lock /run/lock/relay-interop-$NET.lock)"

run=$(mktemp -d /tmp/relay-interop.XXXXXX)
chmod 755 "$run" # postfix, nginx workers and the virtual delivery agent run unprivileged
bin=$run/bin
mkdir -p "$bin" "$run/keys" "$run/nsd" "$run/unbound" "$run/nginx-tmp" "$run/swaks" "$run/relay-data"

# in_ns CMD...: run CMD in a private mount namespace whose /etc/resolv.conf
# names the test resolver. The relay (MTA-STS policy hosts are resolved with
# the system resolver) and Postfix (it has no resolver setting) need it.
printf 'nameserver %s.53\noptions trust-ad\n' "$NET" >"$run/resolv.conf"
chmod 644 "$run/resolv.conf"
in_ns() {
  unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$run/resolv.conf" "$@"
}

wait_tcp() { # ip port what
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$3 does not listen on $1:$2"
}
show_log() { [ -f "$1" ] && tail -n 30 "$1" >&2 || true; }

# ---------------------------------------------------------------- build
step "build relay and relayctl (from $SRC), interop-tool"
(cd "$SRC" && go build -o "$bin/relay" ./cmd/relay && go build -o "$bin/relayctl" ./cmd/relayctl) ||
  die "cannot build the relay from $SRC"
go build -o "$bin/interop-tool" ./interop/tool || die "cannot build interop-tool"
tool=$bin/interop-tool

step "generate PKI, zones, services, policies ($run)"
"$tool" gen -dir "$run" -net "$NET"

# ---------------------------------------------------------------- DNS
step "sign zones"
inception=$(date -u -d '-1 hour' +%Y%m%d%H%M%S)
expiration=$(date -u -d '+7 days' +%Y%m%d%H%M%S)
: >"$run/zones/ds.txt"
while read -r zone kind; do
  [ -n "$zone" ] || continue
  zf=$run/zones/$zone.zone
  if [ "$kind" != signed ]; then
    cp "$zf" "$zf.served"
    continue
  fi
  kd=$run/keys/$zone
  mkdir -p "$kd"
  ksk=$(cd "$kd" && ldns-keygen -a ECDSAP256SHA256 -k "$zone.")
  zsk=$(cd "$kd" && ldns-keygen -a ECDSAP256SHA256 "$zone.")
  if [ "$zone" = test ]; then
    cat "$run/zones/ds.txt" >>"$zf" # secure delegations
    ldns-key2ds -n -2 "$kd/$ksk.key" >"$run/unbound/trust-anchor.ds"
  else
    ldns-key2ds -n -2 "$kd/$ksk.key" >>"$run/zones/ds.txt"
  fi
  ldns-signzone -i "$inception" -e "$expiration" -o "$zone." -f "$zf.served" "$zf" "$kd/$ksk" "$kd/$zsk"
done <"$run/zones.txt"
while read -r zone owner type; do
  [ -n "$zone" ] || continue
  "$tool" corrupt -file "$run/zones/$zone.zone.served" -owner "$owner" -type "$type"
done <"$run/bogus.txt"
chmod -R a+rX "$run/zones"

step "nsd on $NET.2:53"
cat >"$run/nsd.conf" <<EOF
server:
  ip-address: $NET.2
  port: 53
  do-ip4: yes
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$run/zones"
  pidfile: "$run/nsd.pid"
  database: ""
  xfrdfile: "$run/nsd/xfrd.state"
  xfrdir: "$run/nsd"
  zonelistfile: "$run/nsd/zone.list"
  logfile: "$run/nsd.log"
  server-count: 1
  hide-version: yes
  verbosity: 1
remote-control:
  control-enable: no
EOF
cat "$run/nsd-zones.conf" >>"$run/nsd.conf"
nsd-checkconf "$run/nsd.conf" || die "nsd.conf rejected"
nsd -c "$run/nsd.conf" || {
  show_log "$run/nsd.log"
  die "nsd did not start"
}
for _ in $(seq 50); do
  dig +short +time=1 +tries=1 @"$NET.2" SOA test. 2>/dev/null | grep -q . && break
  sleep 0.1
done
dig +short +time=1 +tries=1 @"$NET.2" SOA test. | grep -q . || {
  show_log "$run/nsd.log"
  die "nsd does not answer on $NET.2"
}

step "unbound on $NET.53:53 (validating, stub test. -> $NET.2, nothing else)"
cat >"$run/unbound.conf" <<EOF
server:
  interface: $NET.53
  port: 53
  interface-automatic: no
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  access-control: 0.0.0.0/0 refuse
  access-control: 127.0.0.0/8 allow
  username: ""
  chroot: ""
  directory: "$run/unbound"
  pidfile: "$run/unbound.pid"
  logfile: "$run/unbound.log"
  use-syslog: no
  verbosity: 1
  val-log-level: 2
  module-config: "validator iterator"
  trust-anchor-file: "$run/unbound/trust-anchor.ds"
  trust-anchor-signaling: no
  root-key-sentinel: no
  qname-minimisation: no
  harden-referral-path: no
  cache-max-ttl: 60
  cache-max-negative-ttl: 10
  val-bogus-ttl: 5
  # Never ask anything outside 127.0.0.0/8.
  do-not-query-localhost: no
  do-not-query-address: 0.0.0.0/2
  do-not-query-address: 64.0.0.0/3
  do-not-query-address: 96.0.0.0/4
  do-not-query-address: 112.0.0.0/5
  do-not-query-address: 120.0.0.0/6
  do-not-query-address: 124.0.0.0/7
  do-not-query-address: 126.0.0.0/8
  do-not-query-address: 128.0.0.0/1
  # Answer only for test. (and the built-in local zones); refuse the rest.
  local-zone: "." refuse
  local-zone: "test." transparent
remote-control:
  control-enable: no
stub-zone:
  name: "test."
  stub-addr: $NET.2
EOF
unbound-checkconf "$run/unbound.conf" >/dev/null || die "unbound.conf rejected: $(unbound-checkconf "$run/unbound.conf" 2>&1)"
unbound -c "$run/unbound.conf" || {
  show_log "$run/unbound.log"
  die "unbound did not start"
}
for _ in $(seq 50); do
  dig +short +time=1 +tries=1 @"$NET.53" SOA test. 2>/dev/null | grep -q . && break
  sleep 0.1
done

step "DNS checks (dig @$NET.53: AD bit, SERVFAIL for the broken RRSIGs, nothing outside test.)"
dns_status() { # name type -> secure | insecure | servfail | other
  local out
  out=$(dig +dnssec +time=3 +tries=1 @"$NET.53" "$1" "$2" 2>&1) || true
  if grep -q 'status: SERVFAIL' <<<"$out"; then
    echo servfail
  elif ! grep -q 'status: NOERROR' <<<"$out" || grep -q 'ANSWER: 0,' <<<"$out"; then
    echo other
  elif grep -Eq '^;; flags:[a-z ]* ad[ ;]' <<<"$out"; then
    echo secure
  else
    echo insecure
  fi
}
dns_bad=0
while read -r name type want; do
  [ -n "$name" ] || continue
  got=$(dns_status "$name" "$type")
  if [ "$got" != "$want" ]; then
    echo "  $name $type: $got, want $want" >&2
    dns_bad=1
  fi
done <"$run/dns-checks.txt"
dig +time=2 +tries=1 @"$NET.53" example.com A | grep -q 'status: REFUSED' || {
  echo "  example.com A: not REFUSED" >&2
  dns_bad=1
}
if [ "$dns_bad" = 1 ]; then
  show_log "$run/unbound.log"
  die "the test DNS does not answer as designed"
fi
echo "  $(grep -c . "$run/dns-checks.txt") answers as designed; example.com refused"

# ---------------------------------------------------------------- nginx
step "nginx on $NET.4:443 (MTA-STS policies)"
cat >"$run/nginx.conf" <<EOF
worker_processes 1;
pid $run/nginx.pid;
error_log $run/nginx-error.log warn;
events { worker_connections 64; }
http {
  access_log $run/nginx-access.log;
  client_body_temp_path $run/nginx-tmp/body;
  proxy_temp_path $run/nginx-tmp/proxy;
  fastcgi_temp_path $run/nginx-tmp/fastcgi;
  uwsgi_temp_path $run/nginx-tmp/uwsgi;
  scgi_temp_path $run/nginx-tmp/scgi;
  types {}
  default_type text/plain;
  ssl_protocols TLSv1.2 TLSv1.3;
$(sed 's/^/  /' "$run/nginx-servers.conf")
}
EOF
chmod -R a+rX "$run/www" "$run/pki"
nginx -q -t -c "$run/nginx.conf" -p "$run/" || die "nginx.conf rejected"
nginx -c "$run/nginx.conf" -p "$run/" || die "nginx did not start"
wait_tcp "$NET.4" 443 nginx

# ---------------------------------------------------------------- receiving Postfix
postfix_common() { # dir syslog-name myhostname
  cat <<EOF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = $2
maillog_file = $1/maillog
maillog_file_prefixes = $run
myhostname = $3
mydomain = interop.test
myorigin = \$myhostname
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_tls_session_cache_database =
smtp_tls_session_cache_database =
biff = no
append_dot_mydomain = no
EOF
}
start_postfix() { # dir
  mkdir -p "$1/queue"
  # "check" creates the queue directories (its warnings about the owners of
  # a queue outside /var/spool are harmless).
  in_ns postfix -c "$1" check >/dev/null 2>"$1/check.log" || {
    cat "$1/check.log" >&2
    show_log "$1/maillog"
    die "postfix -c $1 check failed"
  }
  in_ns postfix -c "$1" start >/dev/null 2>"$1/start.log" || {
    cat "$1/start.log" >&2
    show_log "$1/maillog"
    die "postfix -c $1 start failed"
  }
}

receivers=$(grep -c . "$run/receiver-hosts.txt")
step "receiving Postfix: $receivers smtpd services on $NET.99-$NET.$((100 + receivers - 2)):25"
rcv=$run/pf-rcv
mkdir -p "$rcv" "$run/mail"
chown "$(id -u nobody):$(id -g nobody)" "$run/mail"
{
  postfix_common "$rcv" postfix-rcv rcv.interop.test
  cat <<EOF
inet_interfaces = loopback-only
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = $(cat "$run/rcv-domains.txt")
virtual_mailbox_base = $run/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
EOF
} >"$rcv/main.cf"
{
  postfix_services
  cat "$run/rcv-master.cf"
} >"$rcv/master.cf"
start_postfix "$rcv"
while read -r ip _ _; do wait_tcp "$ip" 25 "receiving Postfix"; done <"$run/receiver-hosts.txt"

# ---------------------------------------------------------------- relay
step "relay on $NET.1:2525, MTA-STS policies on $NET.3:443"
cat >"$run/relay.toml" <<EOF
hostname = "relay.interop.test"
data_dir = "$run/relay-data"

[log]
level = "info"

[dns]
resolver = "$NET.53:53"
timeout = "5s"

[[listener]]
address = "$NET.1:2525"
trusted_networks = ["127.0.0.0/8"]

[delivery]
first_retry = "1h"          # deferred messages stay deferred during the run
queue_lifetime = "120h"
delay_warning = "0s"
connect_timeout = "10s"

[inbound]
address = "$NET.3:443"
cert_file = "$run/pki/mta-sts-relay.crt"
key_file = "$run/pki/mta-sts-relay.key"

$(cat "$run/relay-sts.toml")
EOF
"$bin/relay" config check --config "$run/relay.toml" >/dev/null || die "relay config check failed: $("$bin/relay" config check --config "$run/relay.toml" 2>&1)"
# SSL_CERT_FILE: the test CA is the only Web PKI root the relay knows.
# A simple command in the background, so that $! is the relay itself
# (unshare, sh and env each exec the next).
unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$run/resolv.conf" \
  env SSL_CERT_FILE="$run/pki/ca.crt" SSL_CERT_DIR="$run/pki/no-such-dir" \
  "$bin/relay" serve --config "$run/relay.toml" >"$run/relay.log" 2>&1 &
echo $! >"$run/relay.pid"
sleep 0.2
kill -0 "$(cat "$run/relay.pid")" 2>/dev/null || {
  show_log "$run/relay.log"
  die "the relay did not start"
}
wait_tcp "$NET.1" 2525 relay
wait_tcp "$NET.3" 443 "relay [inbound]"
for _ in $(seq 50); do
  "$bin/relayctl" --config "$run/relay.toml" queue inspect >/dev/null 2>&1 && break
  sleep 0.1
done

step "policy servers (curl with the test CA)"
while read -r host ip; do
  body=$(curl -sS --max-time 5 --cacert "$run/pki/ca.crt" --resolve "$host:443:$ip" "https://$host/.well-known/mta-sts.txt") ||
    die "https://$host/.well-known/mta-sts.txt from $ip failed"
  grep -q '^version: STSv1' <<<"$body" || die "https://$host/.well-known/mta-sts.txt: $body"
done < <(
  for h in $(cat "$run/relay-sts-names.txt"); do echo "$h $NET.3"; done
  for d in "$run"/www/*; do echo "$(basename "$d") $NET.4"; done
)
echo "  every policy is served with a certificate from the test CA"

# ---------------------------------------------------------------- reference Postfix
step "reference Postfix (smtp_tls_security_level = dane) on $NET.5:2525"
ref=$run/pf-ref
mkdir -p "$ref"
{
  postfix_common "$ref" postfix-ref ref.interop.test
  cat <<EOF
# inet_interfaces must be interface addresses; the smtpd service binds $NET.5
inet_interfaces = loopback-only
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = dane
smtp_dns_support_level = dnssec
smtp_tls_loglevel = 1
smtp_address_preference = ipv4
smtp_connect_timeout = 10s
dnssec_probe = ns:test.
# deferred mail stays deferred during the run
queue_run_delay = 1h
minimal_backoff_time = 1h
maximal_backoff_time = 2h
delay_warning_time = 0h
EOF
} >"$ref/main.cf"
{
  postfix_services
  echo "$NET.5:2525 inet n - n - - smtpd"
} >"$ref/master.cf"
start_postfix "$ref"
wait_tcp "$NET.5" 2525 "reference Postfix"

# ---------------------------------------------------------------- send
step "send one message per scenario to the relay and to the reference Postfix"
: >"$run/sends.tsv"
send() { # side server id rcpt
  local log=$run/swaks/$1-$3.log qid
  # swaks in the namespace too: whatever it looks up goes to the test resolver.
  in_ns swaks --server "$2" --helo client.interop.test --from sender@sink.test --to "$4" \
    --header "Subject: interop $3" --header "X-Interop-Id: $1/$3" \
    --body "Interop scenario $3, sent through $1." --timeout 30 >"$log" 2>&1 || true
  qid=$(sed -n 's/.*queued as \([^ ]*\).*/\1/p' "$log" | tail -n 1)
  echo "$1 $3 ${qid:--}" >>"$run/sends.tsv"
  [ -n "$qid" ] || echo "  $1 did not accept $3: $(grep -E '^ *<\*\*' "$log" | head -n 1)" >&2
}
while read -r id _ rcpt; do
  send relay "$NET.1:2525" "$id" "$rcpt"
  send postfix "$NET.5:2525" "$id" "$rcpt"
done <"$run/scenarios.tsv"
echo "  $(grep -c . "$run/scenarios.tsv") scenarios sent"

# ---------------------------------------------------------------- score
step "score (waiting up to ${WAIT}s for every message to be delivered or deferred)"
rc=0
"$tool" score -dir "$run" -relayctl "$bin/relayctl" -relay-config "$run/relay.toml" \
  -maildir "$run/mail/box" -postfix-log "$ref/maillog" -postfix-version "$(postconf -dh mail_version)" \
  -wait "${WAIT}s" || rc=$?
echo "interop suite took $(($(date +%s) - START))s"
if [ "$rc" -gt 1 ]; then
  show_log "$run/relay.log"
  die "scoring failed"
fi
exit "$rc"
