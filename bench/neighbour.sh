#!/usr/bin/env bash
# Containment benchmark (issue "Containment"): another org's latency while one org attacks the
# plugin runtime. The neighbour (unmetered org) drives POST /v1/echo (and, in the database
# phase, GET /v1/crm/events) with wrk; the attacker (standard plan, one member token) runs the
# `hostile` test plugin on a route only this benchmark declares:
#   solo  - the neighbour alone;
#   cpu   - 6 attacker connections posting {"mode":"spin"} (each spins to its CPU deadline);
#   db    - 18 attacker connections posting {"mode":"lock-sleep"} (take a lock, then sleep
#           3 s in WASI holding the transaction's connection).
# Usage: bench/neighbour.sh [rounds] [seconds]     (needs wrk: apt-get install wrk)
# Prints a markdown table of medians; numbers go into docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --bin gateway

POL=$(mktemp -d /tmp/gwpol.XXXXXX)
cp policies/*.toml "$POL/"
cat > "$POL/zz-bench-hostile.toml" <<'TOML'
[plugins.hostile]
file = "hostile.wasm"

[[route]]
id = "bench.hostile"
method = "POST"
path = "/v1/bench/hostile"
target = "plugin:hostile"
roles = ["member", "admin"]

[route.sandbox]
cpu_ms = 200
timeout_ms = 5000

[route.grants]
tables = { crm_contacts = "read" }
locks = true
TOML
export GATEWAY_POLICIES="$POL"

source bench/lib.sh
trap 'stop_gateway; rm -rf "$POL"' EXIT
start_gateway member
NEIGHBOUR=$BENCH_TOKEN
ATTACK_ORG=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs" -H "authorization: Bearer $SUPER" \
  -d '{"name":"attacker","plan":"standard"}' | sed -E 's/.*"org_id":"([^"]+)".*/\1/')
export ATTACK_TOKEN=$(curl -sf -XPOST "http://$GWADDR/v1/admin/orgs/$ATTACK_ORG/tokens" -H "authorization: Bearer $SUPER" \
  -d '{"role":"member","email":"attacker@bench.test"}' | sed -E 's/.*"token":"([^"]+)".*/\1/')
curl -sf -XPOST "http://$GWADDR/v1/echo" -H "authorization: Bearer $NEIGHBOUR" -d '{}' >/dev/null
curl -sf "http://$GWADDR/v1/crm/events?limit=1" -H "authorization: Bearer $NEIGHBOUR" >/dev/null

lat() { # wrk args... -> "rps p50_ms p99_ms non2xx"
  wrk --latency "$@" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
    /Non-2xx/ {bad=$NF}
    END {printf "%s %.2f %.2f %d\n", rps, p50, p99, bad+0}'
}
echo_load() { BENCH_TOKEN=$NEIGHBOUR lat -t1 -c4 -d${SECS}s -s bench/post.lua "http://$GWADDR/v1/echo"; }
events_load() { BENCH_TOKEN=$NEIGHBOUR lat -t1 -c2 -d${SECS}s -s bench/get.lua "http://$GWADDR/v1/crm/events?limit=1"; }
attack() { # conns body
  HOSTILE_BODY=$2 wrk -t2 -c"$1" -d$((SECS + 2))s --timeout 10s -s bench/hostile.lua "http://$GWADDR/v1/bench/hostile" >/dev/null 2>&1 &
  ATTACKER=$!
  sleep 1
}

declare -a SOLO CPU DB DBEV SOLOEV
for r in $(seq 1 "$ROUNDS"); do
  SOLO+=("$(echo_load)"); SOLOEV+=("$(events_load)")
  attack 6 '{"mode":"spin"}'; CPU+=("$(echo_load)"); wait "$ATTACKER" || true
  sleep 1
  attack 18 '{"mode":"lock-sleep","ms":3000}'; DB+=("$(echo_load)"); DBEV+=("$(events_load)"); kill "$ATTACKER" 2>/dev/null || true; wait "$ATTACKER" 2>/dev/null || true
  sleep 3
  echo "round $r: solo ${SOLO[-1]} | cpu ${CPU[-1]} | db ${DB[-1]} | events solo ${SOLOEV[-1]} db ${DBEV[-1]}" >&2
done
row() { # label values...
  local label=$1; shift
  echo "| $label | $(col 1 "$@" | median) | $(col 2 "$@" | median) | $(col 3 "$@" | median) | $(col 4 "$@" | median) |"
}
echo
echo "| neighbour's request, phase | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
row "POST /v1/echo, alone" "${SOLO[@]}"
row "POST /v1/echo, attacker spinning (6 conns)" "${CPU[@]}"
row "POST /v1/echo, attacker holding DB (18 conns)" "${DB[@]}"
row "GET /v1/crm/events, alone" "${SOLOEV[@]}"
row "GET /v1/crm/events, attacker holding DB" "${DBEV[@]}"
S99=$(col 3 "${SOLO[@]}" | median)
awk -v s="$S99" -v c="$(col 3 "${CPU[@]}" | median)" -v d="$(col 3 "${DB[@]}" | median)" \
  'BEGIN {t = 2 * s + 5; printf "\ntarget p99 <= 2 x solo + 5 ms = %.2f ms: cpu %s (%.2f), db %s (%.2f)\n", t, (c <= t ? "met" : "MISSED"), c, (d <= t ? "met" : "MISSED"), d}'
