#!/usr/bin/env bash
# Throughput benchmark: the relay against Postfix (Debian) as an outbound relay,
# both on loopback, both fed by smtp-source and delivering to one SMTP sink
# through a local DNS server (unbound, local zone sink.test: MX -> mx.sink.test
# -> A).
#
# Usage: sudo bench/throughput/run.sh
# Environment:
#   BENCH_NET=127.78.0          /24 of 127.0.0.0/8 everything listens on
#   BENCH_SIZES="1024 102400"   message sizes (smtp-source -l)
#   BENCH_MODES="plain starttls" delivery side: plaintext sink, or STARTTLS offered
#   BENCH_N_1024=10000          messages per cell for size 1024 (BENCH_N_<size>)
#   BENCH_N_102400=4000         (and for any other size)
#   BENCH_SESSIONS=20           parallel smtp-source sessions
#   BENCH_ROUNDS=3              every cell this many times, relay and Postfix
#                               alternating; the table gives medians and each
#                               round's end-to-end ratio
#   BENCH_PROBE_RATE=20         latency probe messages per second during injection
#   BENCH_TIMEOUT=90            seconds a cell may take before it is cut off
#   BENCH_SINK=go               receiver: go (bench/sinktool) or smtp-sink
#                               (Postfix's; plain cells only, no latency)
#   BENCH_PPROF=1               relay: [metrics] pprof, a 10 s CPU profile in
#                               the first relay cell of each size (keeps the run dir)
#   BENCH_KEEP=1                keep the run directory
#
# Addresses: unbound .53, sink .25:25 (its HTTP status .25:8025), relay
# .1:2525 (metrics .1:9109 with BENCH_PPROF), Postfix .5:2525. Postfix runs in
# a mount namespace whose /etc/resolv.conf points at unbound; the relay uses
# [dns] resolver. Queues of both live under the run directory (same disk,
# /var/tmp). Every daemon is stopped by pid when the script ends.
#
# The receiver is bench/sinktool by default, not Postfix's smtp-sink: smtp-sink
# has no STARTTLS, so it cannot measure delivery over TLS, and it cannot
# timestamp arrivals, so it cannot give latency. sinktool offers STARTTLS in
# starttls cells (self-signed certificate; neither daemon verifies it: the
# relay does opportunistic TLS without a DANE/MTA-STS policy, Postfix has
# smtp_tls_security_level = may and, as Debian's main.cf, a TLS session
# cache), counts messages received over TLS, and for
# every message with an "X-Bench-Sent: <unix ns>" header records the delay to
# the end of its DATA. A fresh sink is started for every cell, the same one for
# both daemons. BENCH_SINK=smtp-sink runs the plain cells against smtp-sink, as
# a cross-check of the sink's own cost.
#
# Per cell (size x mode x {relay, postfix}, relay first): while smtp-source
# injects N messages, `sinktool probe` submits timestamped messages (one SMTP
# session, BENCH_PROBE_RATE a second) to the same daemon; P = probes accepted.
# - injection rate = N / smtp-source wall time;
# - end to end rate = (N + P) / time from the start of injection until the
#   sink has received N + P messages;
# - p50/p99 latency = percentiles over the P probes of sink arrival (end of
#   DATA) minus the probe's timestamp (taken before its MAIL FROM);
# - CPU s per 1000 messages = delta of utime+stime (+cutime+cstime of reaped
#   children) of the daemon's processes (the relay process; Postfix master and
#   everything in its session), per 1000 of N + P;
# - peak memory = max over 0.2 s samples of the summed Pss and the summed Rss
#   of those processes (Rss counts Postfix's shared pages once per process);
# - tls = messages the sink received over TLS, of all it received.
set -euo pipefail
cd "$(dirname "$0")/../.."
. interop/postfix.sh # postfix_services
ROOT=$(pwd)
NET=${BENCH_NET:-127.78.0}
SIZES=${BENCH_SIZES:-"1024 102400"}
SESS=${BENCH_SESSIONS:-20}
ROUNDS=${BENCH_ROUNDS:-3}
TMO=${BENCH_TIMEOUT:-90}
MODES=${BENCH_MODES:-"plain starttls"}
PROBE_RATE=${BENCH_PROBE_RATE:-20}
SINK=${BENCH_SINK:-go}
PPROF=${BENCH_PPROF:-0}
KEEP=${BENCH_KEEP:-0}
[ "$PPROF" = 1 ] && KEEP=1
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
die() { echo "bench: $*" >&2; exit 2; }
step() { echo "== $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root"
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "BENCH_NET must be 127.x.y"
case $SINK in go | smtp-sink) ;; *) die "BENCH_SINK must be go or smtp-sink" ;; esac
for m in $MODES; do case $m in plain | starttls) ;; *) die "BENCH_MODES: unknown mode $m (plain, starttls)" ;; esac; done
[[ $PROBE_RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_PROBE_RATE must be a number"

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
sink_exe() { if [ "$SINK" = go ]; then echo "$run/bin/sinktool"; else command -v smtp-sink; fi; }
stop_sink() { stop_pid "$(pidf "$run/sink.pid")" "$(sink_exe)"; }
# is_ours pid exe: compares device and inode, which hold across mount
# namespaces (Postfix runs under unshare -m), where /proc's path may not.
is_ours() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(stat -L -c %d:%i "/proc/$1/exe" 2>/dev/null)" = "$(stat -L -c %d:%i "$2" 2>/dev/null)" ]; }
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
    stop_pid "$(pidf "$run/probe.pid")" "$run/bin/sinktool"
    stop_pid "$(pidf "$run/pprof.pid")" "$(command -v curl)"
    stop_sink
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

step "build relay and sinktool"
go build -o "$bin/relay" ./cmd/relay && go build -o "$bin/sinktool" ./bench/sinktool || die "build failed"

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
smtp_tls_session_cache_database = btree:\$data_directory/smtp_scache
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
if [ "$PPROF" = 1 ]; then
  cp "$run/relay.toml" "$run/relay.toml.base"
  printf '[metrics]\naddress = "%s.1:9109"\npprof = true\n' "$NET" >>"$run/relay.toml"
  if ! "$bin/relay" config check --config "$run/relay.toml" >/dev/null 2>"$run/pprof-config.err"; then
    echo "bench: warning: relay rejects [metrics] pprof ($(head -c 300 "$run/pprof-config.err")); no profiles" >&2
    mv "$run/relay.toml.base" "$run/relay.toml"
    PPROF=0
  fi
fi
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
sampler() { # which outfile: max summed Pss and Rss (kB) every 0.2 s, no forks but ps
  local mp=0 mr=0 sp sr p k v _ ps
  while :; do
    if [ "$1" = relay ]; then ps=$(relay_pids); else ps=$(pf_pids); fi
    sp=0 sr=0
    for p in $ps; do
      while read -r k v _; do
        case $k in Pss:) sp=$((sp + v)) ;; Rss:) sr=$((sr + v)) ;; esac
      done 2>/dev/null <"/proc/$p/smaps_rollup" || true
    done
    if [ "$sp" -gt "$mp" ] || [ "$sr" -gt "$mr" ]; then
      [ "$sp" -gt "$mp" ] && mp=$sp
      [ "$sr" -gt "$mr" ] && mr=$sr
      echo "$mp $mr" >"$2"
    fi
    sleep 0.2
  done
}
STATUS=http://$NET.25:8025/status
jget() { sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p" <<<"$2"; } # key json
smtp_sink_count() { tail -c 200 "$run/sink.out" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1 || true; }
start_sink() { # mode
  stop_sink
  : >"$run/sink.out"
  if [ "$SINK" = go ]; then
    local tls=()
    [ "$1" = starttls ] && tls=(--starttls)
    "$bin/sinktool" sink --listen "$NET.25:25" --status "$NET.25:8025" "${tls[@]}" >"$run/sink.out" 2>"$run/sink.err" &
    echo $! >"$run/sink.pid"
    wait_tcp "$NET.25" 8025 sinktool
    wait_tcp "$NET.25" 25 sinktool
  else
    smtp-sink -u nobody -c "$NET.25:25" 1000 >"$run/sink.out" 2>"$run/sink.err" &
    echo $! >"$run/sink.pid"
    wait_tcp "$NET.25" 25 smtp-sink
    sleep 0.3
    # the probe connection of wait_tcp is not a message; count from here
    SINK_BASE=$(smtp_sink_count); SINK_BASE=${SINK_BASE:-0}
  fi
}
now() { date +%s.%N; }
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

results=$run/results.txt
: >"$results"
declare -A profiled=()
cell() { # which size mode n round
  local which=$1 size=$2 mode=$3 n=$4 round=$5 addr c0 c1 s0 s1 t0 t1 t2 got=0 target probes=0 peak rss rem st="" p50=- p99=- tls=- conns=- sinkcpu=0 prof=""
  [ "$which" = relay ] && addr=$NET.1:2525 || addr=$NET.5:2525
  start_sink "$mode"
  : >"$run/peak"
  sampler "$which" "$run/peak" & echo $! >"$run/sampler.pid"
  if [ "$PPROF" = 1 ] && [ "$which" = relay ] && [ -z "${profiled[$size]:-}" ]; then
    profiled[$size]=1
    prof=$run/cpu-$size-$mode.pprof
    curl -sf --max-time 30 -o "$prof" "http://$NET.1:9109/debug/pprof/profile?seconds=10" 2>"$run/pprof.err" &
    echo $! >"$run/pprof.pid"
  fi
  c0=$(cpu_of "$which"); s0=$(cpu_ticks "$(pidf "$run/sink.pid")"); t0=$(now)
  if [ "$SINK" = go ]; then
    "$bin/sinktool" probe --to "$addr" --rate "$PROBE_RATE" --from probe@bench.test --rcpt user@sink.test --size "$size" >"$run/probe.out" 2>"$run/probe.err" &
    echo $! >"$run/probe.pid"
  fi
  timeout "$TMO" smtp-source -s "$SESS" -m "$n" -l "$size" -f bench@bench.test -t user@sink.test "$addr" >/dev/null 2>"$run/source.err" || echo "bench: smtp-source exited $? for $which $size $mode" >&2
  t1=$(now)
  if [ "$SINK" = go ]; then
    stop_pid "$(pidf "$run/probe.pid")" "$bin/sinktool"
    probes=$(sed -n 's/^sent \([0-9]*\).*/\1/p' "$run/probe.out"); probes=${probes:-0}
    grep -q 'failed 0' "$run/probe.out" || echo "bench: probe: $(cat "$run/probe.out" "$run/probe.err" | tr '\n' ' ')" >&2
  fi
  target=$((n + probes))
  if [ "$SINK" = go ]; then
    rem=$(echo "r = $TMO - ($(now) - $t0); if (r < 1) r = 1; r" | bc)
    st=$(curl -sf --max-time "$(echo "$rem + 10" | bc)" "$STATUS?wait=$target&timeout=$rem") || die "sink status failed"
    got=$(jget messages "$st")
    if [ "$got" -ge "$target" ]; then
      t2=$(awk -v ns="$(jget last_ns "$st")" 'BEGIN { printf "%.6f", ns / 1e9 }')
    else
      t2=$(now); echo "bench: $which $size $mode: only $got of $target at the sink after ${TMO}s" >&2
    fi
  else
    while :; do
      got=$(smtp_sink_count); got=$(( ${got:-0} - SINK_BASE ))
      [ "$got" -ge "$target" ] && break
      if [ "$(echo "$(now) - $t0 > $TMO" | bc)" = 1 ]; then echo "bench: $which $size $mode: only $got of $target at the sink after ${TMO}s" >&2; break; fi
      sleep 0.05
    done
    t2=$(now)
  fi
  # let the daemon finish bookkeeping (queue removal) so its CPU is counted
  sleep 1
  c1=$(cpu_of "$which"); s1=$(cpu_ticks "$(pidf "$run/sink.pid")")
  stop_pid "$(pidf "$run/sampler.pid")" /usr/bin/bash
  read -r peak rss <"$run/peak" 2>/dev/null || true; peak=${peak:-0} rss=${rss:-0}
  if [ "$SINK" = go ]; then
    st=$(curl -sf --max-time 5 "$STATUS") || die "sink status failed"
    p50=$(jget p50_ms "$st"); p99=$(jget p99_ms "$st"); tls=$(jget tls_messages "$st"); got=$(jget messages "$st")
    conns="$(jget connections "$st") (tls $(jget tls_connections "$st"), resumed $(jget tls_resumed "$st"))"
    if [ "$mode" = starttls ] && [ "$tls" != "$got" ]; then
      echo "bench: WARNING: $which $size starttls: only $tls of $got messages arrived over TLS (sink: tls_failed $(jget tls_failed "$st"))" >&2
    fi
    [ "$(jget probes "$st")" = "$probes" ] || echo "bench: warning: $probes probes sent, the sink timed $(jget probes "$st")" >&2
  fi
  sinkcpu=$((s1 - s0))
  if [ -n "$prof" ]; then
    if wait "$(pidf "$run/pprof.pid")" && [ -s "$prof" ]; then
      echo "  cpu profile: $prof" >&2
    else
      echo "bench: warning: no CPU profile from the relay ($(head -c 200 "$run/pprof.err"))" >&2; rm -f "$prof"
    fi
  fi
  echo "$which $size $mode $n $target $got $t0 $t1 $t2 $((c1 - c0)) $peak $rss $p50 $p99 $tls $sinkcpu $probes $round" >>"$results"
  printf '  %-7s %6d B %-8s n=%-6d +%-4d probes  inject %6.0f/s  e2e %6.0f/s  p50 %7s ms  p99 %7s ms  cpu %5.2fs/1k  pss %5.1f MiB  rss %5.1f MiB  tls %s/%s  conns %s  sink cpu %.2fs/1k\n' \
    "$which" "$size" "$mode" "$n" "$probes" \
    "$(echo "$n / ($t1 - $t0)" | bc -l)" "$(echo "$got / ($t2 - $t0)" | bc -l)" "$p50" "$p99" \
    "$(echo "($c1 - $c0) / $HZ * 1000 / $target" | bc -l)" "$(echo "$peak / 1024" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
    "$tls" "$got" "$conns" "$(echo "$sinkcpu / $HZ * 1000 / $target" | bc -l)" >&2
}

total_start=$(now)
for size in $SIZES; do
  var=BENCH_N_$size
  case $size in 1024) def=10000 ;; *) def=4000 ;; esac
  n=${!var:-$def}
  for mode in $MODES; do
    if [ "$mode" = starttls ] && [ "$SINK" != go ]; then
      echo "bench: smtp-sink has no STARTTLS: skipping $size starttls" >&2; continue
    fi
    for round in $(seq "$ROUNDS"); do
      step "size $size, $mode, $n messages, $SESS sessions, probes at ${PROBE_RATE}/s, round $round of $ROUNDS"
      cell relay "$size" "$mode" "$n" "$round"
      cell postfix "$size" "$mode" "$n" "$round"
    done
  done
done
stop_sink

# ---------------------------------------------------------------- table
# R = relay, P = Postfix; R:P = relay / Postfix (latency, CPU, memory: lower
# is better for the relay below 1). With several rounds, every figure is the
# median over the rounds (ratios are of the medians).
echo
awk -v hz="$HZ" '
function med(a, w, k,   i, j, v, x, c) { c = cnt[w,k]; for (i = 1; i <= c; i++) v[i] = a[w,k,i]
  for (i = 2; i <= c; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j+1] = v[j]; v[j+1] = x }
  return c % 2 ? v[(c+1)/2] : (v[c/2] + v[c/2+1]) / 2 }
function r(a, b) { if (b <= 0) return "-"; return sprintf(a / b < 0.1 ? "%.3f" : "%.2f", a / b) }
function l(x) { return x == "-" ? x : sprintf(x >= 100 ? "%.0f" : "%.1f", x) }
function trio(f, a, b) { return sprintf(f " / " f " / %s", a, b, r(a, b)) }
function ltrio(a, b) { return a == "-" ? "-" : l(a) " / " l(b) " / " r(a, b) }
{ w=$1; k=$2 " " $3; n[k]=$4; tgt=$5; got=$6; i=++cnt[w,k]
  inj_[w,k,i]=$4/($8-$7); e2e_[w,k,i]=got/($9-$7); cpu_[w,k,i]=$10/hz*1000/tgt; pss_[w,k,i]=$11/1024; rss_[w,k,i]=$12/1024
  p50_[w,k,i]=$13; p99_[w,k,i]=$14; tls[w,k]=tls[w,k] (i > 1 ? "," : "") $15 "/" got
  if (!(k in seen)) { seen[k]=1; order[++m]=k } }
END {
  for (i = 1; i <= m; i++) for (wi = 1; wi <= 2; wi++) { k = order[i]; w = wi == 1 ? "relay" : "postfix"
    inj[w,k] = med(inj_, w, k); e2e[w,k] = med(e2e_, w, k); cpu[w,k] = med(cpu_, w, k)
    pss[w,k] = med(pss_, w, k); rss[w,k] = med(rss_, w, k)
    p50[w,k] = p50_[w,k,1] == "-" ? "-" : med(p50_, w, k); p99[w,k] = p99_[w,k,1] == "-" ? "-" : med(p99_, w, k) }
  nc = split("size|mode|n|inject msg/s|end-to-end msg/s|p50 ms|p99 ms|CPU s/1000 msg|peak Pss MiB|peak RSS MiB|tls/received", h, "|")
  for (c = 1; c <= nc; c++) { t[0,c] = h[c]; t[1,c] = (c <= 3 ? "" : "R / P / R:P") }
  t[1,nc] = "R / P"
  for (i = 1; i <= m; i++) { k = order[i]; split(k, sm, " ");
    t[i+1,1] = sm[1]; t[i+1,2] = sm[2]; t[i+1,3] = n[k]
    t[i+1,4] = trio("%.0f", inj["relay",k], inj["postfix",k])
    t[i+1,5] = trio("%.0f", e2e["relay",k], e2e["postfix",k])
    t[i+1,6] = ltrio(p50["relay",k], p50["postfix",k])
    t[i+1,7] = ltrio(p99["relay",k], p99["postfix",k])
    t[i+1,8] = trio("%.2f", cpu["relay",k], cpu["postfix",k])
    t[i+1,9] = trio("%.1f", pss["relay",k], pss["postfix",k])
    t[i+1,10] = trio("%.1f", rss["relay",k], rss["postfix",k])
    t[i+1,11] = tls["relay",k] " / " tls["postfix",k] }
  for (c = 1; c <= nc; c++) for (i = 0; i <= m + 1; i++) if (length(t[i,c]) > wd[c]) wd[c] = length(t[i,c])
  for (i = 0; i <= m + 1; i++) { line = ""; for (c = 1; c <= nc; c++) line = line sprintf("%-" wd[c] "s", t[i,c]) (c < nc ? "  " : ""); sub(/ +$/, "", line); print line } }' "$results"
echo "end-to-end R:P by round: $(awk '{ k = $2 " " $3; v[$1, k, $18] = $6 / ($9 - $7); if (!(k in s)) { s[k] = 1; o[++m] = k } if ($18 > n) n = $18 }
  END { for (i = 1; i <= m; i++) { line = line (i > 1 ? "; " : "") o[i] ":"; for (r = 1; r <= n; r++) line = line sprintf(" %.2f", v["relay", o[i], r] / v["postfix", o[i], r]) } print line }' "$results")"
echo "sink CPU s/1000 msg: $(awk -v hz="$HZ" '{ printf "%s%s %s %s %.2f", (NR>1?", ":""), $1, $2, $3, $16/hz*1000/$5 }' "$results")"
echo "relay VmHWM at the end: $(awk '/^VmHWM:/{print $2/1024 " MiB"}' "/proc/$(relay_pids)/status")"
echo "receiver: $([ "$SINK" = go ] && echo "sinktool" || echo "smtp-sink"); probes ${PROBE_RATE}/s; $SESS smtp-source sessions; wall time $(echo "$(now) - $total_start" | bc | cut -d. -f1) s"
echo "postfix: $(postconf -d mail_version | sed 's/.*= //'); relay: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) CPUs"
