#!/usr/bin/env bash
# A/B of two gateway binaries on the echo route (tenant guard + rate limit + echo plugin),
# alternating in one run so both see the same machine: each round starts A, measures, stops
# it, then the same for B. For the cost of one change on the hot path: build the binary
# without it and with it (cp target/release/gateway /tmp/gw-a between the builds).
#
# Usage: bench/ab.sh A_BINARY B_BINARY [rounds] [seconds]     (needs wrk)
# A_PLUGINS / B_PLUGINS: each side's GATEWAY_PLUGIN_DIR (a guest change measured with its
# host change); PLAIN=1 also measures plain hyper (gateway/examples/plain_hyper.rs) each round.
# Prints a markdown table of medians and B / A.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; ROUNDS=${3:-3}; SECS=${4:-10}; CONNS=32
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo xtask plugins >/dev/null
source bench/lib.sh
trap 'stop_gateway' EXIT

run() { # url -> "rps p50 p99"
  wrk -t2 -c$CONNS -d${SECS}s --latency -s bench/post.lua "$1" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}
measure() { # binary [plugin dir] -> "rps p50 p99"
  GATEWAY_PLUGIN_DIR=${2:-plugins/target/wasm32-wasip2/release} GATEWAY_BIN=$1 start_gateway member
  # Warm up: instance pool, JIT'd code cache, connections.
  wrk -t2 -c$CONNS -d2s -s bench/post.lua "http://$GWADDR/v1/echo" >/dev/null
  run "http://$GWADDR/v1/echo"
  stop_gateway
}
plain() {
  ./target/release/examples/plain_hyper 127.0.0.1:18182 & local pid=$!
  sleep 0.5
  run http://127.0.0.1:18182/v1/echo
  kill $pid; wait $pid 2>/dev/null || true
}
declare -a RA RB RP
for r in $(seq 1 "$ROUNDS"); do
  [ "${PLAIN:-0}" = 1 ] && RP+=("$(plain)")
  RA+=("$(measure "$A" "${A_PLUGINS:-}")")
  RB+=("$(measure "$B" "${B_PLUGINS:-}")")
  echo "round $r: A ${RA[-1]} | B ${RB[-1]}${RP:+ | plain ${RP[-1]}}" >&2
done
MA=$(col 1 "${RA[@]}" | median); MB=$(col 1 "${RB[@]}" | median)
echo
echo "| binary | req/s (median of $ROUNDS) | p50 | p99 |"
echo "|---|---|---|---|"
echo "| A: $A | $MA | $(col 2 "${RA[@]}" | median) | $(col 3 "${RA[@]}" | median) |"
echo "| B: $B | $MB | $(col 2 "${RB[@]}" | median) | $(col 3 "${RB[@]}" | median) |"
if [ "${PLAIN:-0}" = 1 ]; then
  MP=$(col 1 "${RP[@]}" | median)
  echo "| plain hyper, fixed body | $MP | $(col 2 "${RP[@]}" | median) | $(col 3 "${RP[@]}" | median) |"
  echo
  awk -v a="$MA" -v b="$MB" -v p="$MP" 'BEGIN {printf "A / plain: %.3f, B / plain: %.3f\n", a / p, b / p}'
fi
echo
awk -v a="$MA" -v b="$MB" 'BEGIN {printf "B / A: %.3f\n", b / a}'
