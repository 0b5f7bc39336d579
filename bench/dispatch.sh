#!/usr/bin/env bash
# Dispatch benchmark: instantiate + call of `echo` on a warm InstancePre (median, p99), with a
# phase breakdown and a naive per-request link for comparison. Usage: bench/dispatch.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask plugins >/dev/null
cargo build --release -q -p gateway --example dispatch_bench
RUST_BACKTRACE=0 ./target/release/examples/dispatch_bench plugins/target/wasm32-wasip2/release/echo.wasm policies "${1:-20000}"
