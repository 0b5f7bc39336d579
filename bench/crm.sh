#!/usr/bin/env bash
# CRM benchmark (issue "crm-track plugin"): POST /v1/crm/track with distinct contacts at 32
# connections through the gateway (guards + crm-track plugin + its transaction), and in the
# same run the native ceiling: the same SQL transaction from a plain sqlx client, 32 tasks, on
# the same database. Default PostgreSQL durability (fsync, synchronous_commit on).
#
# Also in the same run, alternating: the same gateway binary serving crm-track as it was built
# against WIT 0.1 (tests/fixtures/wit-0.1.0: one tenant-db call per statement, no batch), on
# a second, otherwise idle instance with its own database.
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
# The 0.1 gateway first: lib.sh keeps one instance's variables, so these are copied aside.
OLD_PLUGINS=$(mktemp -d /tmp/gwplug01.XXXXXX)
cp plugins/target/wasm32-wasip2/release/*.wasm "$OLD_PLUGINS/"
cp tests/fixtures/wit-0.1.0/crm_track.wasm "$OLD_PLUGINS/crm_track.wasm"
GATEWAY_PLUGIN_DIR="$OLD_PLUGINS" start_gateway admin
OLD_GW=$GW OLD_DATA=$DATA OLD_ADDR=$GWADDR OLD_TOKEN=$BENCH_TOKEN
trap 'stop_gateway; kill "$OLD_GW" 2>/dev/null || true; wait "$OLD_GW" 2>/dev/null || true; rm -rf "$OLD_DATA" "$OLD_PLUGINS"' EXIT
start_gateway admin
DBURL="postgres://postgres@localhost:5432/postgres?host=$DATA/pg"

track() { # addr token run
  BENCH_TOKEN=$2 BENCH_RUN=$3 wrk -t2 -c32 -d${SECS}s --latency -s bench/crm.lua "http://$1/" | awk '
      /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$5}
      END {print rps, p50, p99, (bad==""?0:bad)}'
}

declare -a G N O
for r in $(seq 1 "$ROUNDS"); do
  G+=("$(track "$GWADDR" "$BENCH_TOKEN" "$r")")
  N+=("$(./target/release/examples/crm_native "$DBURL" "$ORG" "$SECS" 32 16)")
  O+=("$(track "$OLD_ADDR" "$OLD_TOKEN" "$r")")
  echo "round $r: gateway ${G[-1]} | native ${N[-1]} | gateway, crm-track 0.1 ${O[-1]}" >&2
done
GR=$(col 1 "${G[@]}" | median); NR_=$(col 1 "${N[@]}" | median)
echo
echo "| path | events/s (median of $ROUNDS) | p50 | p99 |"
echo "|---|---|---|---|"
echo "| gateway: POST /v1/crm/track (guards + crm-track plugin) | $GR | $(col 2 "${G[@]}" | median) | $(col 3 "${G[@]}" | median) |"
echo "| native ceiling: same transaction from sqlx, 9 round trips | $NR_ | $(col 2 "${N[@]}" | median) ms | $(col 3 "${N[@]}" | median) ms |"
echo "| gateway, crm-track built against WIT 0.1 (no batch) | $(col 1 "${O[@]}" | median) | $(col 2 "${O[@]}" | median) | $(col 3 "${O[@]}" | median) |"
echo "non-2xx responses per round: $(col 4 "${G[@]}" | tr '\n' ' ') (0.1: $(col 4 "${O[@]}" | tr '\n' ' '))"
awk -v g="$GR" -v n="$NR_" 'BEGIN {printf "ratio gateway / native: %.2f\n", g / n}'
