#!/usr/bin/env bash
# History benchmark (issue #17, "History and secrets"): webhook ingress and queue throughput
# with 10 million rows of history against an empty database, in the same run.
#
# Three data directories, each its own embedded PostgreSQL: "fresh" (the schema as migrated:
# today and a week ahead), "empty" (the partitions a gateway has after 30 days: the last 30
# days and a week ahead, no rows) and "history" (the same partitions, filled once with HISTORY
# rows spread over the last 30 days, the default retention, so nothing of it is dropped): 30%
# webhook_events (with their webhook_event_keys), 30% finished jobs, 30% agent_runs, 10%
# crm_outbox, by generate_series as the owner. "empty" against "history" is the effect of the
# rows; "fresh" against "empty" that of the number of partitions. Then, in turn, for ROUNDS
# rounds:
#   1. ingress: signed Standard Webhooks deliveries at 32 connections for SECS seconds, workers
#      off (the events and jobs are committed before the 200), then the jobs it left are
#      deleted;
#   2. queue: JOBS webhook jobs enqueued for one org and drained by the gateway's 16 workers
#      (8 per org), the `generic` (echo) adapter; jobs/s between the first and last finished.
# Default PostgreSQL durability (fsync, synchronous_commit on) throughout.
#
# Usage: bench/history.sh [rounds] [seconds] [jobs] [history rows]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
JOBS=${3:-10000}
HISTORY=${4:-10000000}
cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --bin gateway --example webhook_bench
B=${CARGO_TARGET_DIR:-./target}/release/examples/webhook_bench
GWBIN=${GATEWAY_BIN:-${CARGO_TARGET_DIR:-./target}/release/gateway}
source bench/lib.sh

ROOT=$(mktemp -d /var/tmp/gwhist.XXXXXX)
chmod 755 "$ROOT"
GW=
stop() { if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; GW=; fi; }
trap 'stop; rm -rf "$ROOT"' EXIT

# start NAME [env...]: a gateway on $ROOT/NAME (kept between starts); sets GWADDR.
start() {
  local name=$1; shift
  mkdir -p "$ROOT/$name"
  env "$@" RUST_BACKTRACE=0 GATEWAY_DATA_DIR="$ROOT/$name" GATEWAY_LISTEN=127.0.0.1:0 GATEWAY_METRICS_LISTEN=off \
    GATEWAY_BOOTSTRAP_TOKEN="$SUPER" GATEWAY_LOG_FORMAT=json GATEWAY_LOG=info \
    "$GWBIN" serve >/dev/null 2>>"$ROOT/$name.log" &
  GW=$!
  rm -f "$ROOT/$name/gateway.addr"
  for _ in $(seq 1 600); do [ -s "$ROOT/$name/gateway.addr" ] && break; sleep 0.1; done
  GWADDR=$(cat "$ROOT/$name/gateway.addr")
}
sql() { psql -qAt -v ON_ERROR_STOP=1 -h "$ROOT/$1/pg" -p 5432 -U postgres -d postgres -c "$2"; }
dburl() { echo "postgres://postgres@localhost:5432/postgres?host=$ROOT/$1/pg"; }

SUPER="bench-super-admin-$(date +%s%N)"
declare -A ORG TOKEN EP SECRET
for name in fresh empty history; do
  start "$name" GATEWAY_JOB_WORKERS=0
  ORG[$name]=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs" -H "authorization: Bearer $SUPER" \
    -d '{"name":"bench","plan":"unmetered"}' | sed -E 's/.*"org_id":"([^"]+)".*/\1/')
  TOKEN[$name]=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs/${ORG[$name]}/tokens" -H "authorization: Bearer $SUPER" \
    -d '{"role":"admin","email":"bench@bench.test"}' | sed -E 's/.*"token":"([^"]+)".*/\1/')
  read -r EP[$name] SECRET[$name] <<<"$(curl -sf -XPOST "http://$GWADDR/v1/webhook-endpoints" \
    -H "authorization: Bearer ${TOKEN[$name]}" -d '{"provider":"generic","scheme":"standard-webhooks"}' |
    sed -E 's/.*"endpoint_id":"([^"]+)".*"secret":"([^"]+)".*/\1 \2/')"
  if [ "$name" != fresh ]; then
    # The last 30 days exist as partitions (the migration made only today and a week ahead).
    sql "$name" "SELECT app_history_cover(t, (now() AT TIME ZONE 'UTC')::date - 30, (now() AT TIME ZONE 'UTC')::date)
                 FROM unnest(ARRAY['webhook_events','jobs','agent_runs','crm_outbox']::regclass[]) t" >/dev/null
  fi
  if [ "$name" = history ]; then
    t0=$(date +%s)
    o=${ORG[$name]}; e=${EP[$name]}
    N3=$((HISTORY * 3 / 10)); N1=$((HISTORY - 3 * N3))
    # Row g happened g·(30 days / n) ago.
    sql "$name" "INSERT INTO webhook_events (id, tenant_id, endpoint_id, provider, event_key, event_type, body, content_type, received_at)
                 SELECT md5('e' || g)::uuid, '$o', '$e', 'generic', 'hist_' || g, 'lead.replied',
                        convert_to('{\"id\":\"hist_' || g || '\",\"type\":\"lead.replied\",\"data\":{\"campaign_id\":42,\"lead\":\"l-' || g || '\"}}', 'UTF8'),
                        'application/json', now() - g * (interval '30 days' / $N3)
                 FROM generate_series(1, $N3) g"
    sql "$name" "INSERT INTO webhook_event_keys (tenant_id, endpoint_id, event_key, event_id, received_at)
                 SELECT '$o', '$e', 'hist_' || g, md5('e' || g)::uuid, now() - g * (interval '30 days' / $N3)
                 FROM generate_series(1, $N3) g"
    sql "$name" "INSERT INTO jobs (tenant_id, kind, ref_id, status, attempts, max_attempts, run_at, created_at, updated_at, finished_at)
                 SELECT '$o', 'webhook', md5('e' || g)::uuid, 'done', 1, 5, t, t, t + interval '1 second', t + interval '1 second'
                 FROM generate_series(1, $N3) g, LATERAL (SELECT now() - g * (interval '30 days' / $N3) - interval '2 seconds' AS t) x"
    sql "$name" "INSERT INTO agent_runs (tenant_id, job_id, kind, attempt, status, input, worker, started_at, finished_at)
                 SELECT '$o', md5('j' || g)::uuid, 'webhook', 1, 'succeeded', jsonb_build_object('ref_id', md5('e' || g)::uuid),
                        'bench/w', t, t + interval '50 milliseconds'
                 FROM generate_series(1, $N3) g, LATERAL (SELECT now() - g * (interval '30 days' / $N3) - interval '2 seconds' AS t) x"
    sql "$name" "INSERT INTO crm_outbox (tenant_id, topic, payload, created_at)
                 SELECT '$o', 'event.tracked.v1', jsonb_build_object('event_id', md5('o' || g)::uuid, 'type', 'signup'),
                        now() - g * (interval '30 days' / $N1)
                 FROM generate_series(1, $N1) g"
    sql "$name" "VACUUM ANALYZE"
    ROWS=$(sql "$name" "SELECT (SELECT count(*) FROM webhook_events) + (SELECT count(*) FROM jobs) + (SELECT count(*) FROM agent_runs) + (SELECT count(*) FROM crm_outbox)")
    SIZE=$(sql "$name" "SELECT pg_size_pretty(pg_database_size('postgres'))")
    echo "history: $ROWS rows ($SIZE) in $(( $(date +%s) - t0 ))s" >&2
  fi
  stop
done

declare -A ING QUE
for r in $(seq 1 "$ROUNDS"); do
  for name in fresh empty history; do
    start "$name" GATEWAY_JOB_WORKERS=0
    ING[$name]+="$($B ingress "$GWADDR" "${EP[$name]}" "${SECRET[$name]}" "$SECS" 32)"$'\n'
    sql "$name" "DELETE FROM jobs WHERE finished_at IS NULL" >/dev/null
    stop
    start "$name" GATEWAY_JOB_ORG_CONCURRENCY=8
    since=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
    $B enqueue "$(dburl "$name")" "${ORG[$name]}" "${EP[$name]}" "$JOBS"
    QUE[$name]+="$($B drain "$(dburl "$name")" 300 "$since")"$'\n'
    stop
    echo "round $r $name: ingress $(echo "${ING[$name]}" | sed '/^$/d' | tail -1) | queue $(echo "${QUE[$name]}" | sed '/^$/d' | tail -1)" >&2
  done
done

med() { echo "$1" | sed '/^$/d' | awk -v i="$2" '{print $i}' | median; }
echo
echo "| database | ingress events/s (32 conn., median of $ROUNDS) | ingress p50 ms | ingress p99 ms | queue jobs/s ($JOBS jobs, median) |"
echo "|---|---|---|---|---|"
for name in fresh empty history; do
  echo "| $name | $(med "${ING[$name]}" 1) | $(med "${ING[$name]}" 2) | $(med "${ING[$name]}" 3) | $(med "${QUE[$name]}" 2) |"
done
awk -v a="$(med "${ING[history]}" 1)" -v b="$(med "${ING[empty]}" 1)" -v c="$(med "${QUE[history]}" 2)" -v d="$(med "${QUE[empty]}" 2)" \
  'BEGIN {printf "history / empty: ingress %.3f, queue %.3f\n", a / b, c / d}'
awk -v a="$(med "${ING[empty]}" 1)" -v b="$(med "${ING[fresh]}" 1)" -v c="$(med "${QUE[empty]}" 2)" -v d="$(med "${QUE[fresh]}" 2)" \
  'BEGIN {printf "empty (39 partitions a table) / fresh (9): ingress %.3f, queue %.3f\n", a / b, c / d}'
