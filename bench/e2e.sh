#!/usr/bin/env bash
# End-to-end benchmark (issue "WASM plugin runtime"): requests/s through the gateway's native
# guards (tenant guard + rate limit) and the `echo` plugin, against a plain hyper server that
# answers a fixed body, both driven by the same wrk settings, alternating, in one run.
#
# Usage: bench/e2e.sh [rounds] [seconds]      (needs wrk: apt-get install wrk)
# Metrics are on (a free port); GATEWAY_METRICS_LISTEN=off bench/e2e.sh measures without them.
# Prints a markdown table of medians; numbers go into docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=32
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --bin gateway --example plain_hyper

source bench/lib.sh
trap 'stop_gateway; kill "${PLAIN:-}" 2>/dev/null || true' EXIT
start_gateway member
curl -sf -XPOST "http://$GWADDR/v1/echo" -H "authorization: Bearer $BENCH_TOKEN" -d '{}' >/dev/null

./target/release/examples/plain_hyper 127.0.0.1:18182 &
PLAIN=$!
sleep 0.5

run() { # url -> "rps p50_ms p99_ms"
  wrk -t2 -c$CONNS -d${SECS}s --latency -s bench/post.lua "$1" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    END {print rps, p50, p99}'
}
declare -a P G
for r in $(seq 1 "$ROUNDS"); do
  P+=("$(run http://127.0.0.1:18182/v1/echo)")
  G+=("$(run "http://$GWADDR/v1/echo")")
  echo "round $r: plain ${P[-1]} | gateway ${G[-1]}" >&2
done
PR=$(col 1 "${P[@]}" | median); GR=$(col 1 "${G[@]}" | median)
echo
echo "| target | req/s (median of $ROUNDS) | p50 | p99 |"
echo "|---|---|---|---|"
echo "| plain hyper, fixed body | $PR | $(col 2 "${P[@]}" | median) | $(col 3 "${P[@]}" | median) |"
echo "| gateway: guard + limit + echo plugin | $GR | $(col 2 "${G[@]}" | median) | $(col 3 "${G[@]}" | median) |"
echo
awk -v g="$GR" -v p="$PR" 'BEGIN {printf "ratio gateway / plain: %.2f\n", g / p}'
echo "metrics: ${GATEWAY_METRICS_LISTEN:-on (127.0.0.1:0)}"
if [ -s "$DATA/metrics.addr" ]; then
  # The series the run produced, as a check that metrics were really recorded.
  curl -sf "http://$(cat "$DATA/metrics.addr")/metrics" | grep -E '^http_server_request_duration_seconds_count\{[^}]*http_route="echo"' || true
fi
