# Shared by the bench scripts: start a release gateway in embedded mode with its access log on,
# create an org (plan `$BENCH_PLAN`, default unmetered) and a token. Sets DATA, GW (pid), GWADDR, SUPER, ORG, BENCH_TOKEN.
# Metrics are on (a free port, in $DATA/metrics.addr) unless GATEWAY_METRICS_LISTEN says otherwise
# (`off` to measure without them).
start_gateway() {
  local role=${1:-member}
  DATA=$(mktemp -d /tmp/gwbench.XXXXXX)
  SUPER="bench-super-admin-$(date +%s%N)"; local admin="$SUPER"
  RUST_BACKTRACE=0 GATEWAY_DATA_DIR="$DATA" GATEWAY_LISTEN=127.0.0.1:0 \
    GATEWAY_METRICS_LISTEN="${GATEWAY_METRICS_LISTEN:-127.0.0.1:0}" GATEWAY_BOOTSTRAP_TOKEN="$admin" \
    GATEWAY_LOG_FORMAT=json GATEWAY_LOG=info "${GATEWAY_BIN:-./target/release/gateway}" serve >/dev/null 2>"$DATA/gateway.log" &
  GW=$!
  for _ in $(seq 1 600); do [ -s "$DATA/gateway.addr" ] && break; sleep 0.1; done
  GWADDR=$(cat "$DATA/gateway.addr")
  ORG=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs" -H "authorization: Bearer $admin" \
    -d "{\"name\":\"bench\",\"plan\":\"${BENCH_PLAN:-unmetered}\"}" | sed -E 's/.*"org_id":"([^"]+)".*/\1/')
  BENCH_TOKEN=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs/$ORG/tokens" -H "authorization: Bearer $admin" \
    -d "{\"role\":\"$role\",\"email\":\"bench@bench.test\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
  export BENCH_TOKEN
}

stop_gateway() {
  kill "${GW:-}" 2>/dev/null || true
  wait "${GW:-}" 2>/dev/null || true
  rm -rf "${DATA:-/nonexistent}"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { local i=$1; shift; for x in "$@"; do echo "$x" | awk -v i="$i" '{print $i}'; done; }
