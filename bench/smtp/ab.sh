#!/usr/bin/env bash
# A/B of two facteur trees on the one-message-per-connection load: each pair starts facteur's SMTP service
# (bench/smtp/facteur-serve.ts, delivery off) from tree A then tree B, warms it with smtp-source, then measures
# 5,000 messages from `smtp-source -s 8`: msg/s, event-loop CPU per message (the main thread's run time from
# /proc/PID/task/PID/schedstat) and whole-process CPU per message. Runs alternate so that machine drift falls on both.
# Usage: bench/smtp/ab.sh TREE_A TREE_B [PAIRS]   (a tree: a checkout with node_modules and its native addons built,
# e.g. `git worktree add /tmp/a COMMIT && ln -s $PWD/node_modules /tmp/a/ && (cd /tmp/a && node native/build.mjs)`)
# Needs smtp-source (Debian postfix) and openssl. Trusts the trees it runs.
set -euo pipefail
A=$(realpath "$1")
B=$(realpath "$2")
PAIRS=${3:-3}
DIR=$(mktemp -d /tmp/facteur-ab-XXXXXX)
trap 'pkill -f "facteur-serve.ts $DIR" || true; rm -rf "$DIR"' EXIT
PORT=$((30000 + RANDOM % 20000))
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -days 2 -subj /CN=mx.bench.test 2>/dev/null
cat > "$DIR/facteur.toml" <<EOF
[server]
data_dir = "$DIR/data"
hostname = "mx.bench.test"
local_domains = ["bench.test"]
tls_cert = "$DIR/cert.pem"
tls_key = "$DIR/key.pem"
log_level = "info"
[auth]
backend = "saslauthd"
saslauthd_path = "$DIR/no-authd"
[inbound]
listen = ["127.0.0.1:$PORT"]
[submission]
enabled = false
[submissions]
enabled = false
[ratelimit]
connections_per_ip_per_minute = 0
[metrics]
listen = ""
EOF
source_run() { smtp-source -s 8 -m "$1" -l 10240 -f sender@example.net -t postmaster@bench.test "127.0.0.1:$PORT"; }
cpu_ms() { # $1 pid, $2 main|all
  local t=0 task
  if [ "$2" = main ]; then t=$(cut -d' ' -f1 "/proc/$1/task/$1/schedstat"); else for task in /proc/"$1"/task/*; do t=$((t + $(cut -d' ' -f1 "$task/schedstat"))); done; fi
  echo "$t"
}
measure() { # $1 tree, $2 label
  rm -rf "$DIR/data"
  (cd "$1" && exec node --import tsx bench/smtp/facteur-serve.ts "$DIR/facteur.toml" > "$DIR/serve.log" 2>&1) &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  source_run 5000
  local m0 a0 t0 m1 a1 t1
  m0=$(cpu_ms "$pid" main); a0=$(cpu_ms "$pid" all); t0=$(date +%s.%N)
  source_run 5000
  t1=$(date +%s.%N); m1=$(cpu_ms "$pid" main); a1=$(cpu_ms "$pid" all)
  echo "$2: $(echo "5000/($t1-$t0)" | bc) msg/s  event loop $(((m1 - m0) / 5000000)) µs/msg  process $(((a1 - a0) / 5000000)) µs/msg"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$PAIRS"); do measure "$A" A; measure "$B" B; done
