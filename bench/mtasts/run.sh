#!/usr/bin/env bash
# Benchmark: the relay's MTA-STS policy serving against nginx.
#
# Both serve the same policy file for mta-sts.example.org with the same
# certificate (ECDSA P-256, made here with openssl) on 127.0.0.1, HTTP/2 and
# HTTP/1.1. One load generator, h2load (Debian: nghttp2-client), measures
#
#   keep-alive:          HTTP/2, -c 50 connections, -m 10 streams each;
#   new TLS connection:  HTTP/1.1, one request per TCP+TLS connection, both
#                        with the TLS session resumed (h2load reconnecting
#                        after "Connection: close") and with a full
#                        handshake (every request from a new h2load client);
#
# in rounds that alternate between the servers, and prints the median
# requests per second of each server and the ratio relay/nginx. The relay is the real daemon (cmd/relay) with an [inbound]
# table. Everything stays on loopback; every process started here is
# stopped through its pid file on exit.
#
# Usage: bench/mtasts/run.sh            (as root when packages are missing)
# Tunables (environment): KA_REQUESTS (default 100000), NEW_REQUESTS (1500),
# CLIENTS (50), STREAMS (10), THREADS (h2load threads, 1), ROUNDS (3).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

KA_REQUESTS=${KA_REQUESTS:-100000}
NEW_REQUESTS=${NEW_REQUESTS:-1500}
CLIENTS=${CLIENTS:-50}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
export PATH="/usr/local/go/bin:$PATH"

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

run=$(mktemp -d /tmp/mtasts-bench.XXXXXX)
chmod 755 "$run" # nginx workers run as an unprivileged user
cleanup() {
  for pidfile in "$run"/nginx.pid "$run"/relay.pid; do
    if [ -s "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

# free_port prints a loopback TCP port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# wait_port waits until 127.0.0.1:$1 accepts connections.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

NGINX_PORT=$(free_port)
RELAY_PORT=$(free_port)
SMTP_PORT=$(free_port)
HOST=mta-sts.example.org
URLPATH=/.well-known/mta-sts.txt

echo "== certificate and policy"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
  -keyout "$run/key.pem" -out "$run/cert.pem" 2>/dev/null
chmod 644 "$run/cert.pem"
mkdir -p "$run/www/.well-known" "$run/nginx-tmp" "$run/relay-data"
# The same bytes the relay renders from the [[inbound.mta_sts]] table below.
printf 'version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.mx.example.org\r\nmax_age: 604800\r\n' \
  >"$run/www/.well-known/mta-sts.txt"
chmod -R a+rX "$run/www"

echo "== nginx on 127.0.0.1:$NGINX_PORT"
cat >"$run/nginx.conf" <<EOF
worker_processes auto;
pid $run/nginx.pid;
error_log $run/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $run/nginx-tmp/body;
  proxy_temp_path $run/nginx-tmp/proxy;
  fastcgi_temp_path $run/nginx-tmp/fastcgi;
  uwsgi_temp_path $run/nginx-tmp/uwsgi;
  scgi_temp_path $run/nginx-tmp/scgi;
  types {}
  default_type text/plain;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    server_name $HOST;
    ssl_certificate $run/cert.pem;
    ssl_certificate_key $run/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $run/www;
    location = $URLPATH { }
    location / { return 404; }
  }
}
EOF
"$NGINX" -c "$run/nginx.conf" -p "$run/"
wait_port "$NGINX_PORT"

echo "== relay on 127.0.0.1:$RELAY_PORT"
go build -o "$run/relay" ./cmd/relay
cat >"$run/relay.toml" <<EOF
hostname = "relay.bench.test"
data_dir = "$run/relay-data"
[log]
level = "warn"
[dns]
resolver = "127.0.0.1:9"   # nothing is delivered; no query leaves the machine
[[listener]]
address = "127.0.0.1:$SMTP_PORT"
trusted_networks = ["127.0.0.0/8"]
[inbound]
address = "127.0.0.1:$RELAY_PORT"
cert_file = "$run/cert.pem"
key_file = "$run/key.pem"
[[inbound.mta_sts]]
domain = "example.org"
mode = "enforce"
max_age = 604800
mx = ["mail.example.org", "*.mx.example.org"]
EOF
"$run/relay" serve --config "$run/relay.toml" >"$run/relay.log" 2>&1 &
echo $! >"$run/relay.pid"
wait_port "$RELAY_PORT"

echo "== same bytes from both"
fetch() { curl -sS --http2 -k --connect-to "$HOST:$1:127.0.0.1:$1" -D "$run/headers.$1" "https://$HOST:$1$URLPATH"; }
if ! cmp <(fetch "$NGINX_PORT") <(fetch "$RELAY_PORT"); then
  echo "the two servers serve different policies" >&2
  exit 1
fi
for p in "$NGINX_PORT" "$RELAY_PORT"; do
  grep -i -E '^(HTTP|content-type|content-length)' "$run/headers.$p" | tr -d '\r' | tr '\n' ' '
  echo
done

# finished_ms converts h2load's "finished in 27.33ms," line to milliseconds.
finished_ms() {
  sed -n 's/^finished in \([0-9.]*\)\([a-z]*\),.*/\1 \2/p' | awk '
    $2 == "s" { print $1 * 1000; next }
    $2 == "ms" { print $1; next }
    $2 == "us" { print $1 / 1000; next }
    { print "unknown unit " $2 > "/dev/stderr"; exit 1 }'
}

# h2run PORT ARGS... runs h2load once and prints its output; it fails
# unless every request succeeded with a 2xx.
h2run() {
  local port=$1 out total ok
  shift
  out=$(timeout 60 h2load -t "$THREADS" --connect-to="127.0.0.1:$port" "$@" "https://$HOST:$port$URLPATH" 2>&1) || {
    echo "$out" >&2
    return 1
  }
  total=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' <<<"$out")
  ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
  if [ -z "$total" ] || [ "$total" != "$ok" ]; then
    echo "$out" >&2
    echo "not every request succeeded (${ok:-0} of ${total:-?})" >&2
    return 1
  fi
  echo "$out"
}

# rate PORT KIND prints requests per second of one measurement:
#   keepalive  HTTP/2, CLIENTS connections x STREAMS streams, KA_REQUESTS;
#   resumed    HTTP/1.1 "Connection: close": a new TCP+TLS connection per
#              request; h2load resumes its TLS session on reconnects;
#   fresh      HTTP/1.1, batches of CLIENTS new h2load clients making one
#              request each: every request pays a full TLS handshake.
rate() {
  local port=$1 kind=$2 ms out batches total_ms=0 i
  case $kind in
  keepalive)
    ms=$(h2run "$port" -n "$KA_REQUESTS" -c "$CLIENTS" -m "$STREAMS" | finished_ms)
    awk -v n="$KA_REQUESTS" -v ms="$ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }'
    ;;
  resumed)
    ms=$(h2run "$port" -n "$NEW_REQUESTS" -c "$CLIENTS" --h1 -H 'Connection: close' | finished_ms)
    awk -v n="$NEW_REQUESTS" -v ms="$ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }'
    ;;
  fresh)
    batches=$((NEW_REQUESTS / CLIENTS))
    for ((i = 0; i < batches; i++)); do
      ms=$(h2run "$port" -n "$CLIENTS" -c "$CLIENTS" --h1 | finished_ms)
      total_ms=$(awk -v a="$total_ms" -v b="$ms" 'BEGIN { print a + b }')
    done
    awk -v n="$((batches * CLIENTS))" -v ms="$total_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }'
    ;;
  esac
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== warm-up"
for p in "$NGINX_PORT" "$RELAY_PORT"; do
  h2run "$p" -n 20000 -c "$CLIENTS" -m "$STREAMS" >/dev/null
  h2run "$p" -n 500 -c "$CLIENTS" --h1 -H 'Connection: close' >/dev/null
done

# Rounds alternate between the servers, so that load from elsewhere on the
# machine hits both alike; the median of the rounds is reported.
declare -A results
kinds=(keepalive resumed fresh)
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  for kind in "${kinds[@]}"; do
    for server in nginx relay; do
      port=$NGINX_PORT
      [ "$server" = relay ] && port=$RELAY_PORT
      r=$(rate "$port" "$kind")
      printf '   %-10s %-6s %8s req/s\n' "$kind" "$server" "$r"
      results[$kind.$server]="${results[$kind.$server]:-} $r"
    done
  done
done

label() {
  case $1 in
  keepalive) echo "keep-alive (h2, -c $CLIENTS -m $STREAMS)" ;;
  resumed) echo "new TLS conn., session resumed (h1)" ;;
  fresh) echo "new TLS conn., full handshake (h1)" ;;
  esac
}
echo
echo "CPUs: $(nproc); load average before: $LOAD; h2load threads: $THREADS; $("$NGINX" -v 2>&1); $(h2load --version 2>&1 | head -1); $(go version | cut -d' ' -f3)"
printf '%-38s %10s %10s %12s\n' "median requests/s of $ROUNDS rounds" "nginx" "relay" "relay/nginx"
for kind in "${kinds[@]}"; do
  n=$(median <<<"${results[$kind.nginx]}")
  r=$(median <<<"${results[$kind.relay]}")
  printf '%-38s %10s %10s %12s\n' "$(label "$kind")" "$n" "$r" "$(ratio "$r" "$n")"
done
