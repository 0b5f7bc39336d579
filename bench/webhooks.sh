#!/usr/bin/env bash
# Webhook benchmark (issue "webhooks + job queue").
#
# 1. Signed ingress: Standard Webhooks deliveries (a fresh webhook-id and HMAC per request) at
#    32 connections through the gateway (endpoint lookup, per-org limit, signature check over
#    the raw body, event + job committed before the 200), and in the same run the native
#    ceiling: the same transaction from plain sqlx tasks (32, pool 16) on the same database.
#    Workers are off here, so both sides measure ingestion alone.
# 2. Queue: JOBS jobs enqueued for 1 or 4 orgs, drained by one gateway's workers (16 workers;
#    8 running jobs per org by default, 16 in the last row) running the `generic` adapter
#    (echo, a no-op plugin); jobs/s between the first and the last finished job.
# Default PostgreSQL durability (fsync, synchronous_commit on) throughout.
#
# Usage: bench/webhooks.sh [rounds] [seconds] [jobs]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
JOBS=${3:-20000}
cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --bin gateway --example webhook_bench
B=./target/release/examples/webhook_bench

source bench/lib.sh
trap 'stop_gateway' EXIT

new_endpoint() { # org-admin-token -> "endpoint_id secret"
  curl -sf -XPOST "http://$GWADDR/v1/webhook-endpoints" -H "authorization: Bearer $1" \
    -d '{"provider":"generic","scheme":"standard-webhooks"}' |
    sed -E 's/.*"endpoint_id":"([^"]+)".*"secret":"([^"]+)".*/\1 \2/'
}

GATEWAY_JOB_WORKERS=0 start_gateway admin
read -r EP SECRET <<<"$(new_endpoint "$BENCH_TOKEN")"
DBURL="postgres://postgres@localhost:5432/postgres?host=$DATA/pg"
declare -a G N
for r in $(seq 1 "$ROUNDS"); do
  G+=("$($B ingress "$GWADDR" "$EP" "$SECRET" "$SECS" 32)")
  N+=("$($B native "$DBURL" "$ORG" "$EP" "$SECS" 32 16)")
  echo "round $r: gateway ${G[-1]} | native ${N[-1]}" >&2
done
stop_gateway
GR=$(col 1 "${G[@]}" | median); NR_=$(col 1 "${N[@]}" | median)
echo
echo "| path (32 connections) | events/s (median of $ROUNDS) | p50 ms | p99 ms |"
echo "|---|---|---|---|"
echo "| gateway: POST /v1/webhooks/{id}, Standard Webhooks signed | $GR | $(col 2 "${G[@]}" | median) | $(col 3 "${G[@]}" | median) |"
echo "| native ceiling: same transaction from sqlx | $NR_ | $(col 2 "${N[@]}" | median) | $(col 3 "${N[@]}" | median) |"
echo "non-2xx responses per round: $(col 4 "${G[@]}" | tr '\n' ' ')"
awk -v g="$GR" -v n="$NR_" 'BEGIN {printf "ratio gateway / native: %.2f\n", g / n}'

echo
echo "| queue: jobs drained by one gateway (no-op adapter) | jobs | jobs/s | dead |"
echo "|---|---|---|---|"
for RUN in 1:8 4:8 1:16; do
  ORGS=${RUN%%:*}; CAP=${RUN##*:}
  GATEWAY_JOB_ORG_CONCURRENCY=$CAP start_gateway admin
  DBURL="postgres://postgres@localhost:5432/postgres?host=$DATA/pg"
  # Stop the workers from starting on a half-built backlog: enqueue everything in one transaction per org.
  for o in $(seq 1 "$ORGS"); do
    if [ "$o" -gt 1 ]; then
      ORG=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs" -H "authorization: Bearer $SUPER" \
        -d "{\"name\":\"bench$o\",\"plan\":\"unmetered\"}" | sed -E 's/.*"org_id":"([^"]+)".*/\1/')
      BENCH_TOKEN=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs/$ORG/tokens" -H "authorization: Bearer $SUPER" \
        -d "{\"role\":\"admin\",\"email\":\"bench$o@bench.test\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
    fi
    read -r EP SECRET <<<"$(new_endpoint "$BENCH_TOKEN")"
    $B enqueue "$DBURL" "$ORG" "$EP" $((JOBS / ORGS))
  done
  echo "| $ORGS org(s) × $((JOBS / ORGS)) jobs, GATEWAY_JOB_ORG_CONCURRENCY=$CAP | $($B drain "$DBURL" 300 | awk '{print $1 " | " $2 " | " $3}') |"
  stop_gateway
done
