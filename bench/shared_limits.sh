#!/usr/bin/env bash
# Echo throughput with the shared rate-limit store off and on (docs/benchmarks.md, "Shared
# limits"): one binary, GATEWAY_RATELIMIT_STORE switched per run, rounds alternating so every
# store sees the same machine. The org's plan meters both its buckets (org and user) with
# quotas no run reaches, so every request pays the limiter and none is refused: `local` is the
# per-process limiter; `postgres` leases from the database (the embedded cluster here);
# `redis` leases from a redis-server this script starts on loopback.
#
# Usage: bench/shared_limits.sh [rounds] [seconds] [stores...]   (needs wrk; default: 3 10 local postgres)
# Prints a markdown table of medians and each store's ratio to the first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-10}; shift $(( $# < 2 ? $# : 2 )) || true
STORES=("${@:-local postgres}"); [ $# -eq 0 ] && STORES=(local postgres)
CONNS=32
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo xtask plugins >/dev/null
source bench/lib.sh
POLICIES=$(mktemp -d /tmp/gwbench-policies.XXXXXX)
cp policies/*.toml "$POLICIES/"
cat >"$POLICIES/zz-bench-plan.toml" <<'TOML'
[plans.bench]
per_org = { rate = "1000000/s", burst = 100000 }
per_user = { rate = "1000000/s", burst = 100000 }
TOML
export GATEWAY_POLICIES=$POLICIES BENCH_PLAN=bench
REDIS_PID=
cleanup() { stop_gateway; [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$POLICIES"; }
trap cleanup EXIT
if [[ " ${STORES[*]} " == *" redis "* ]]; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & REDIS_PID=$!
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

run() { # url -> "rps p50 p99"
  wrk -t2 -c$CONNS -d${SECS}s --latency -s bench/post.lua "$1" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}
measure() { # store -> "rps p50 p99"
  local store=$1
  if [ "$store" = redis ]; then
    GATEWAY_RATELIMIT_STORE=redis GATEWAY_RATELIMIT_URL="redis://127.0.0.1:$REDIS_PORT/0" start_gateway member
  else
    GATEWAY_RATELIMIT_STORE=$store start_gateway member
  fi
  wrk -t2 -c$CONNS -d2s -s bench/post.lua "http://$GWADDR/v1/echo" >/dev/null
  local out; out=$(run "http://$GWADDR/v1/echo")
  # Every request was admitted: a refusal would make the store look faster than it is.
  if grep -q '"status":429' "$DATA/gateway.log"; then echo "$store: requests were refused 429" >&2; exit 1; fi
  stop_gateway
  echo "$out"
}
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  for s in "${STORES[@]}"; do
    R[$s]+="$(measure "$s")"$'\n'
    echo "round $r: $s $(echo "${R[$s]}" | sed '/^$/d' | tail -1)" >&2
  done
done
first=${STORES[0]}
med() { echo "${R[$1]}" | sed '/^$/d' | awk -v i="$2" '{print $i}' | median; }
echo
echo "| GATEWAY_RATELIMIT_STORE | req/s (median of $ROUNDS) | p50 | p99 | req/s vs $first |"
echo "|---|---|---|---|---|"
for s in "${STORES[@]}"; do
  awk -v s="$s" -v a="$(med "$first" 1)" -v b="$(med "$s" 1)" -v p50="$(med "$s" 2)" -v p99="$(med "$s" 3)" \
    'BEGIN {printf "| %s | %s | %s | %s | %.3f |\n", s, b, p50, p99, b / a}'
done
