#!/usr/bin/env bash
# A/B of two gateway binaries on the echo route (tenant guard + rate limit + echo plugin),
# alternating in one run so both see the same machine: each round starts A, measures, stops
# it, then the same for B. For the cost of one change on the hot path: build the binary
# without it and with it (cp target/release/gateway /tmp/gw-a between the builds).
#
# Usage: bench/ab.sh A_BINARY B_BINARY [rounds] [seconds]     (needs wrk)
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
measure() { # binary -> "rps p50 p99"
  GATEWAY_BIN=$1 start_gateway member
  # Warm up: instance pool, JIT'd code cache, connections.
  wrk -t2 -c$CONNS -d2s -s bench/post.lua "http://$GWADDR/v1/echo" >/dev/null
  run "http://$GWADDR/v1/echo"
  stop_gateway
}
declare -a RA RB
for r in $(seq 1 "$ROUNDS"); do
  RA+=("$(measure "$A")")
  RB+=("$(measure "$B")")
  echo "round $r: A ${RA[-1]} | B ${RB[-1]}" >&2
done
MA=$(col 1 "${RA[@]}" | median); MB=$(col 1 "${RB[@]}" | median)
echo
echo "| binary | req/s (median of $ROUNDS) | p50 | p99 |"
echo "|---|---|---|---|"
echo "| A: $A | $MA | $(col 2 "${RA[@]}" | median) | $(col 3 "${RA[@]}" | median) |"
echo "| B: $B | $MB | $(col 2 "${RB[@]}" | median) | $(col 3 "${RB[@]}" | median) |"
echo
awk -v a="$MA" -v b="$MB" 'BEGIN {printf "B / A: %.3f\n", b / a}'
