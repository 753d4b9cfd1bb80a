#!/usr/bin/env bash
# Scale benchmark: fill the relay's queue with many small messages to a
# destination that defers them, then report the daemon's memory, its
# restart time on that queue, and the wall time of `relayctl queue inspect`.
#
# The destination is Postfix's smtp-sink answering every RCPT with 4xx
# (-r rcpt), reached through a [[route]] next hop: each message is tried
# once, deferred, and stays queued for its retry in five minutes. With
# SCALE_MODE=hold the relay holds every message instead (no attempts).
#
# Usage: bench/scale/run.sh     (no root needed: ports above 1024 on loopback)
# Environment:
#   SCALE_ADDR=127.78.1.1:2525  intake listener
#   SCALE_N=1000000             messages to inject at most
#   SCALE_SECONDS=300           stop injecting after this many seconds
#   SCALE_CHUNK=10000           messages per smtp-source run (checked against time)
#   SCALE_SIZE=512              message size (smtp-source -l)
#   SCALE_SINK=127.78.1.25:2526 the deferring destination
#   SCALE_MODE=defer            defer (attempted, deferred) or hold
#   SCALE_KEEP=1                keep the run directory (and its queue)
set -euo pipefail
cd "$(dirname "$0")/../.."
ADDR=${SCALE_ADDR:-127.78.1.1:2525}
N=${SCALE_N:-1000000}
SECS=${SCALE_SECONDS:-900}
SINK=${SCALE_SINK:-127.78.1.25:2526}
MODE=${SCALE_MODE:-defer}
CHUNK=${SCALE_CHUNK:-10000}
SIZE=${SCALE_SIZE:-512}
KEEP=${SCALE_KEEP:-0}
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
die() { echo "scale: $*" >&2; exit 2; }
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix)"
[[ ${ADDR%:*} =~ ^127\. && ${SINK%:*} =~ ^127\. ]] || die "SCALE_ADDR and SCALE_SINK must be on 127.0.0.0/8"
case $MODE in defer) hold=false ;; hold) hold=true ;; *) die "SCALE_MODE must be defer or hold" ;; esac
run=$(mktemp -d /var/tmp/relay-scale.XXXXXX)
bin=$run/bin
pidf() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }
stop_relay() {
  local p; p=$(pidf "$run/relay.pid")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(readlink "/proc/$p/exe")" = "$bin/relay" ] || return 0
  kill "$p"; for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$p" 2>/dev/null || true
}
stop_sink() { local p; p=$(pidf "$run/sink.pid"); [ -n "$p" ] && kill "$p" 2>/dev/null; true; }
cleanup() { local rc=$?; set +e; trap - EXIT INT TERM; stop_relay; stop_sink; if [ "$KEEP" = 1 ]; then echo "scale: kept $run" >&2; else rm -rf "$run"; fi; exit "$rc"; }
trap cleanup EXIT; trap 'exit 130' INT TERM
mkdir -p "$bin" "$run/data"
go build -o "$bin/relay" ./cmd/relay && go build -o "$bin/relayctl" ./cmd/relayctl || die "build failed"
cat >"$run/relay.toml" <<EOF
hostname = "relay.scale.test"
data_dir = "$run/data"
[log]
level = "warn"
[dns]
resolver = "127.0.0.1:1"
check_dnssec = false
[[listener]]
address = "$ADDR"
trusted_networks = ["127.0.0.0/8"]
[limits]
max_connections_per_ip = 1000
[delivery]
hold = $hold
[[route]]
domain = "defer.test"
security = "none"
next_hop = "$SINK"
EOF
if [ "$MODE" = defer ]; then
  smtp-sink -r rcpt "$SINK" 256 >/dev/null 2>"$run/sink.err" &
  echo $! >"$run/sink.pid"
fi
host=${ADDR%:*}; port=${ADDR##*:}
accepts() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
start_relay() { # prints seconds from exec until the port accepts
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/relay" serve --config "$run/relay.toml" >>"$run/relay.log" 2>&1 &
  echo $! >"$run/relay.pid"
  for _ in $(seq 6000); do accepts && break; kill -0 "$(pidf "$run/relay.pid")" 2>/dev/null || die "relay died: $(tail -3 "$run/relay.log")"; sleep 0.01; done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
mem() { awk '/^VmRSS:|^VmHWM:|^RssAnon:|^RssFile:/{printf "%s %.1f MiB  ", $1, $2/1024}' "/proc/$(pidf "$run/relay.pid")/status"; }
# peak RSS over the injection, sampled every second
sample_rss() { local max=0 v; while sleep 1; do v=$(awk '/^VmRSS:/{print $2}' "/proc/$(pidf "$run/relay.pid")/status" 2>/dev/null) || break; [ "${v:-0}" -gt "$max" ] && max=$v && echo "$max" >"$run/rss.peak"; done; }
inspect() { local t0 t1; t0=$(date +%s.%N); "$bin/relayctl" --config "$run/relay.toml" queue inspect >"$run/inspect.txt" 2>&1 || true; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

echo "start (empty queue): $(start_relay) s"
sample_rss & sampler=$!
sent=0; t0=$(date +%s)
while [ "$sent" -lt "$N" ] && [ $(( $(date +%s) - t0 )) -lt "$SECS" ]; do
  c=$CHUNK; [ $((N - sent)) -lt "$c" ] && c=$((N - sent))
  smtp-source -d -s 20 -m "$c" -l "$SIZE" -f bench@scale.test -t "user$((sent % 1000))@defer.test" "$ADDR" >/dev/null 2>>"$run/source.err" || die "smtp-source failed: $(tail -2 "$run/source.err")"
  sent=$((sent + c))
done
el=$(( $(date +%s) - t0 ))
kill "$sampler" 2>/dev/null || true
echo "injected: $sent messages of $SIZE B in ${el}s ($((sent / (el > 0 ? el : 1))) msg/s), mode $MODE"
echo "peak VmRSS during injection: $(awk '{printf "%.1f MiB", $1/1024}' "$run/rss.peak" 2>/dev/null)"
echo "after injection: $(mem)"
echo "queue inspect (warm daemon): $(inspect) s"
head -5 "$run/inspect.txt" | sed 's/^/  | /'
echo "on-disk: $(du -sh "$run/data" | cut -f1)"
stop_relay
echo "restart on the full queue: $(start_relay) s until the SMTP port accepts"
sleep 2
echo "after restart (+2s): $(mem)"
echo "queue inspect (after restart): $(inspect) s"
sleep 10
echo "after restart (+12s): $(mem)"
# Every message due at once: the relay retries the whole queue.
t0=$(date +%s.%N)
"$bin/relayctl" --config "$run/relay.toml" queue retry --all >"$run/retry.txt" 2>&1 || die "retry --all failed: $(tail -2 "$run/retry.txt")"
t1=$(date +%s.%N)
echo "queue retry --all: $(echo "$t1 - $t0" | bc) s ($(tail -1 "$run/retry.txt"))"
rm -f "$run/rss.peak"; sample_rss & sampler=$!
a0=$(awk '/^Messages:/{print $2}' "$run/inspect.txt")
sleep 30
kill "$sampler" 2>/dev/null || true
echo "retry storm, 30 s after retry --all: peak VmRSS $(awk '{printf "%.1f MiB", $1/1024}' "$run/rss.peak" 2>/dev/null); now: $(mem)"
"$bin/relayctl" --config "$run/relay.toml" --json queue inspect >"$run/inspect.json" 2>/dev/null || true
echo "  next retry after the storm: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("next_retry"))' "$run/inspect.json" 2>/dev/null) (messages: ${a0:-?})"
