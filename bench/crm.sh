#!/usr/bin/env bash
# CRM benchmark (issue "crm-track plugin"): POST /v1/crm/track with distinct contacts at 32
# connections through the gateway (guards + crm-track plugin + its transaction), and in the
# same run the native ceiling: the same SQL transaction from a plain sqlx client, 32 tasks, on
# the same database. Default PostgreSQL durability (fsync, synchronous_commit on).
#
# Usage: bench/crm.sh [rounds] [seconds]      (needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --bin gateway --example crm_native

source bench/lib.sh
trap 'stop_gateway; kill "${PLAIN:-}" 2>/dev/null || true' EXIT
start_gateway admin
DBURL="postgres://postgres@localhost:5432/postgres?host=$DATA/pg"

declare -a G N
for r in $(seq 1 "$ROUNDS"); do
  G+=("$(BENCH_RUN=$r wrk -t2 -c32 -d${SECS}s --latency -s bench/crm.lua "http://$GWADDR/" | awk '
      /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$5}
      END {print rps, p50, p99, (bad==""?0:bad)}')")
  N+=("$(./target/release/examples/crm_native "$DBURL" "$ORG" "$SECS" 32 16)")
  echo "round $r: gateway ${G[-1]} | native ${N[-1]}" >&2
done
GR=$(col 1 "${G[@]}" | median); NR_=$(col 1 "${N[@]}" | median)
echo
echo "| path | events/s (median of $ROUNDS) | p50 | p99 |"
echo "|---|---|---|---|"
echo "| gateway: POST /v1/crm/track (guards + crm-track plugin) | $GR | $(col 2 "${G[@]}" | median) | $(col 3 "${G[@]}" | median) |"
echo "| native ceiling: same transaction from sqlx | $NR_ | $(col 2 "${N[@]}" | median) ms | $(col 3 "${N[@]}" | median) ms |"
echo "non-2xx responses per round: $(col 4 "${G[@]}" | tr '\n' ' ')"
awk -v g="$GR" -v n="$NR_" 'BEGIN {printf "ratio gateway / native: %.2f\n", g / n}'
