#!/usr/bin/env bash
# Throughput benchmark: the relay against Postfix (Debian) as an outbound relay,
# both on loopback, both fed by smtp-source and delivering to smtp-sink through
# a local DNS server (unbound, local zone sink.test: MX -> mx.sink.test -> A).
#
# Usage: sudo bench/throughput/run.sh
# Environment:
#   BENCH_NET=127.78.0        /24 of 127.0.0.0/8 everything listens on
#   BENCH_SIZES="1024 102400" message sizes (smtp-source -l)
#   BENCH_N_1024=15000        messages per cell for size 1024 (BENCH_N_<size>)
#   BENCH_N_102400=6000
#   BENCH_SESSIONS=20         parallel smtp-source sessions
#   BENCH_TIMEOUT=90          seconds a cell may take before it is cut off
#   BENCH_KEEP=1              keep the run directory
#
# Addresses: unbound .53, smtp-sink .25:25, relay .1:2525, Postfix .5:2525.
# Postfix runs in a mount namespace whose /etc/resolv.conf points at unbound;
# the relay uses [dns] resolver. Queues of both live under the run directory
# (same disk, /var/tmp). Every daemon is stopped by pid when the script ends.
#
# Per cell: injection rate = N / smtp-source wall time; end-to-end rate =
# N / time until smtp-sink has counted N messages; CPU s per 1000 messages =
# delta of utime+stime (+cutime+cstime of reaped children) of the daemon's
# processes (the relay process; Postfix master and everything in its
# session); peak memory = max over 0.2 s samples of the summed Pss of those
# processes (for the relay also VmHWM).
set -euo pipefail
cd "$(dirname "$0")/../.."
. interop/postfix.sh # postfix_services
ROOT=$(pwd)
NET=${BENCH_NET:-127.78.0}
SIZES=${BENCH_SIZES:-"1024 102400"}
SESS=${BENCH_SESSIONS:-20}
TMO=${BENCH_TIMEOUT:-90}
KEEP=${BENCH_KEEP:-0}
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
die() { echo "bench: $*" >&2; exit 2; }
step() { echo "== $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root"
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "BENCH_NET must be 127.x.y"

# ---------------------------------------------------------------- packages
need=()
for p in postfix unbound bind9-dnsutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  made_rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_rc=1; fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || die "apt-get failed"
  [ "$made_rc" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------- teardown
run=""
is_ours() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]; }
stop_pid() { # pid exe
  is_ours "$1" "$2" || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
pidf() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }
cleanup() {
  local rc=$? pid
  set +e; trap - EXIT INT TERM
  if [ -n "$run" ] && [ -d "$run" ]; then
    stop_pid "$(pidf "$run/sampler.pid")" /usr/bin/bash
    stop_pid "$(pidf "$run/sink.pid")" "$(command -v smtp-sink)"
    stop_pid "$(pidf "$run/relay.pid")" "$run/bin/relay"
    pid=$(pidf "$run/pf/queue/pid/master.pid")
    if is_ours "$pid" "$(postconf -dh daemon_directory)/master"; then
      postfix -c "$run/pf" stop >/dev/null 2>&1 || kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    stop_pid "$(pidf "$run/unbound.pid")" "$(command -v unbound)"
    if [ "$KEEP" = 1 ]; then echo "bench: run directory kept: $run" >&2; else rm -rf "$run"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p /run/lock
exec 9>"/run/lock/relay-bench-$NET.lock"
flock -n 9 || die "another benchmark uses $NET.x"

run=$(mktemp -d /var/tmp/relay-bench.XXXXXX)
chmod 755 "$run"
bin=$run/bin
mkdir -p "$bin" "$run/unbound" "$run/relay-data" "$run/pf"

step "build relay"
go build -o "$bin/relay" ./cmd/relay || die "build failed"

wait_tcp() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; die "$3 does not listen on $1:$2"; }

step "unbound on $NET.53 (local zone sink.test)"
cat >"$run/unbound.conf" <<EOF
server:
  interface: $NET.53
  port: 53
  interface-automatic: no
  do-ip4: yes
  do-ip6: no
  access-control: 0.0.0.0/0 refuse
  access-control: 127.0.0.0/8 allow
  username: ""
  chroot: ""
  directory: "$run/unbound"
  pidfile: "$run/unbound.pid"
  logfile: "$run/unbound.log"
  use-syslog: no
  module-config: "iterator"
  do-not-query-localhost: no
  do-not-query-address: 0.0.0.0/0
  local-zone: "." refuse
  local-zone: "sink.test." static
  local-data: "sink.test. 300 IN SOA ns.sink.test. h.sink.test. 1 3600 600 86400 60"
  local-data: "sink.test. 300 IN MX 10 mx.sink.test."
  local-data: "mx.sink.test. 300 IN A $NET.25"
remote-control:
  control-enable: no
EOF
unbound-checkconf "$run/unbound.conf" >/dev/null || die "unbound.conf rejected"
unbound -c "$run/unbound.conf" || die "unbound did not start"
for _ in $(seq 50); do dig +short +time=1 +tries=1 @"$NET.53" MX sink.test 2>/dev/null | grep -q . && break; sleep 0.1; done
dig +short @"$NET.53" A mx.sink.test | grep -qx "$NET.25" || die "unbound does not answer"

printf 'nameserver %s.53\n' "$NET" >"$run/resolv.conf"; chmod 644 "$run/resolv.conf"
in_ns() { unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$run/resolv.conf" "$@"; }

step "Postfix relay on $NET.5:2525"
pf=$run/pf
cat >"$pf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $pf/maillog
myhostname = pf.bench.test
mydomain = bench.test
myorigin = \$myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
relay_domains =
relayhost =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = may
smtp_tls_session_cache_database =
smtpd_tls_session_cache_database =
biff = no
append_dot_mydomain = no
EOF
{
  echo "$NET.5:2525 inet n - n - - smtpd"
  postfix_services
} >"$pf/master.cf"
mkdir -p "$pf/queue"
in_ns postfix -c "$pf" check >/dev/null 2>"$pf/check.log" || { cat "$pf/check.log" >&2; die "postfix check failed"; }
in_ns postfix -c "$pf" start >/dev/null 2>"$pf/start.log" || { cat "$pf/start.log" >&2; die "postfix start failed"; }
wait_tcp "$NET.5" 2525 postfix

step "relay on $NET.1:2525"
cat >"$run/relay.toml" <<EOF
hostname = "relay.bench.test"
data_dir = "$run/relay-data"
[log]
level = "warn"
[dns]
resolver = "$NET.53:53"
check_dnssec = false
[[listener]]
address = "$NET.1:2525"
trusted_networks = ["127.0.0.0/8"]
[limits]
max_connections_per_ip = 1000
[delivery]
hold = false
EOF
"$bin/relay" config check --config "$run/relay.toml" >/dev/null || die "relay config: $("$bin/relay" config check --config "$run/relay.toml" 2>&1)"
"$bin/relay" serve --config "$run/relay.toml" >"$run/relay.log" 2>&1 &
echo $! >"$run/relay.pid"
wait_tcp "$NET.1" 2525 relay

# ---------------------------------------------------------------- measuring
relay_pids() { pidf "$run/relay.pid"; }
pf_pids() { local m; m=$(pidf "$pf/queue/pid/master.pid"); ps -o pid= -s "$m" 2>/dev/null | tr -d ' '; }
# cpu ticks of a set of pids: utime+stime+cutime+cstime (reaped children are
# accounted in their parent's cutime/cstime)
cpu_ticks() { local t=0 p s; for p in "$@"; do s=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue; set -- $s; t=$((t + ${12} + ${13} + ${14} + ${15})); done; echo "$t"; }
cpu_of() { # which
  local ps; if [ "$1" = relay ]; then ps=$(relay_pids); else ps=$(pf_pids); fi
  # shellcheck disable=SC2086
  cpu_ticks $ps
}
HZ=$(getconf CLK_TCK)
sampler() { # which outfile: max summed Pss (kB) every 0.2 s
  local max=0 sum p v ps
  while :; do
    if [ "$1" = relay ]; then ps=$(relay_pids); else ps=$(pf_pids); fi
    sum=0
    for p in $ps; do v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || v=0; sum=$((sum + ${v:-0})); done
    [ "$sum" -gt "$max" ] && max=$sum && echo "$max" >"$2"
    sleep 0.2
  done
}
sink_count() { tail -c 200 "$run/sink.out" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1 || true; }
start_sink() {
  stop_pid "$(pidf "$run/sink.pid")" "$(command -v smtp-sink)"
  : >"$run/sink.out"
  smtp-sink -u nobody -c "$NET.25:25" 1000 >"$run/sink.out" 2>"$run/sink.err" &
  echo $! >"$run/sink.pid"
  wait_tcp "$NET.25" 25 smtp-sink
  sleep 0.3
  # the probe connection of wait_tcp is not a message; count from here
  SINK_BASE=$(sink_count); SINK_BASE=${SINK_BASE:-0}
}
now() { date +%s.%N; }

results=$run/results.txt
: >"$results"
cell() { # which size n
  local which=$1 size=$2 n=$3 addr c0 c1 t0 t1 t2 got peak hwm=""
  [ "$which" = relay ] && addr=$NET.1:2525 || addr=$NET.5:2525
  start_sink
  : >"$run/peak"
  sampler "$which" "$run/peak" & echo $! >"$run/sampler.pid"
  c0=$(cpu_of "$which"); t0=$(now)
  timeout "$TMO" smtp-source -s "$SESS" -m "$n" -l "$size" -f bench@bench.test -t user@sink.test "$addr" >/dev/null 2>"$run/source.err" || echo "bench: smtp-source exited $? for $which $size" >&2
  t1=$(now)
  while :; do
    got=$(sink_count); got=$(( ${got:-0} - SINK_BASE ))
    [ "$got" -ge "$n" ] && break
    if [ "$(echo "$(now) - $t0 > $TMO" | bc)" = 1 ]; then echo "bench: $which $size: only $got of $n at the sink after ${TMO}s" >&2; break; fi
    sleep 0.05
  done
  t2=$(now)
  # let the daemon finish bookkeeping (queue removal) so its CPU is counted
  sleep 1
  c1=$(cpu_of "$which")
  stop_pid "$(pidf "$run/sampler.pid")" /usr/bin/bash
  peak=$(cat "$run/peak" 2>/dev/null); peak=${peak:-0}
  [ "$which" = relay ] && hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$(relay_pids)/status")
  echo "$which $size $n $got $t0 $t1 $t2 $((c1 - c0)) $peak ${hwm:-0}" >>"$results"
  printf '  %-6s %6d B  n=%-6d inject %8.0f/s  e2e %8.0f/s  cpu %6.2fs/1k  pss %6.1f MiB\n' "$which" "$size" "$n" \
    "$(echo "$n / ($t1 - $t0)" | bc -l)" "$(echo "$got / ($t2 - $t0)" | bc -l)" \
    "$(echo "($c1 - $c0) / $HZ * 1000 / $n" | bc -l)" "$(echo "$peak / 1024" | bc -l)" >&2
}

for size in $SIZES; do
  var=BENCH_N_$size
  case $size in 1024) def=15000 ;; *) def=6000 ;; esac
  n=${!var:-$def}
  step "size $size, $n messages, $SESS sessions"
  cell relay "$size" "$n"
  cell postfix "$size" "$n"
done

# ---------------------------------------------------------------- table
echo
printf '%-8s %-10s %-28s %-28s %-28s %-28s\n' size n "inject msg/s (R / P / R:P)" "end-to-end msg/s (R / P / R:P)" "CPU s/1000 msg (R / P / R:P)" "peak Pss MiB (R / P / R:P)"
awk -v hz="$HZ" '
{ w=$1; s=$2; k=s; n[k]=$3; inj[w,k]=$3/($6-$5); e2e[w,k]=$4/($7-$5); cpu[w,k]=$8/hz*1000/$3; mem[w,k]=$9/1024; if (!(k in seen)) { seen[k]=1; order[++m]=k } }
END { for (i=1;i<=m;i++) { k=order[i];
  printf "%-8s %-10d %-28s %-28s %-28s %-28s\n", k, n[k],
    sprintf("%.0f / %.0f / %.2f", inj["relay",k], inj["postfix",k], inj["relay",k]/inj["postfix",k]),
    sprintf("%.0f / %.0f / %.2f", e2e["relay",k], e2e["postfix",k], e2e["relay",k]/e2e["postfix",k]),
    sprintf("%.2f / %.2f / %.2f", cpu["relay",k], cpu["postfix",k], (cpu["postfix",k]>0?cpu["relay",k]/cpu["postfix",k]:0)),
    sprintf("%.1f / %.1f / %.2f", mem["relay",k], mem["postfix",k], (mem["postfix",k]>0?mem["relay",k]/mem["postfix",k]:0)) } }' "$results"
echo "relay VmHWM at the end: $(awk '/^VmHWM:/{print $2/1024 " MiB"}' "/proc/$(relay_pids)/status")"
echo "postfix: $(postconf -d mail_version | sed 's/.*= //'); relay: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) CPUs"
