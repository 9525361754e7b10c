#!/usr/bin/env bash
# Chaos drill of the real binary (see bench/chaos/drill.py for what it proves):
# 1,000 tasks through `sim` with 30 % transient faults, a counting tool, and kill -9 at
# seeded random moments — on SQLite (pocket serve) and on PostgreSQL (pocket serve plus two
# pocket workers). Bounded: each drill gives up after 150 s, the whole script after 240 s.
#
#   bash bench/chaos.sh                 # a fresh seed, printed
#   CHAOS_SEED=42 bash bench/chaos.sh   # the same kill plan and faults again
#   POCKET_BIN=target/debug/pocket bash bench/chaos.sh
#
# Python 3 (standard library only) drives it: an HTTP counting server, process control,
# /proc sampling and API calls in one small file, with no build step; the code under test is
# the `pocket` binary itself.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${POCKET_BIN:-target/release/pocket}"
if [[ ! -x "$bin" ]]; then
  cargo build --release --bin pocket
fi
seed="${CHAOS_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
echo "chaos drill: seed $seed (CHAOS_SEED=$seed bash bench/chaos.sh reruns it)"

run() { timeout --signal=TERM 240 python3 bench/chaos/drill.py --bin "$bin" --seed "$seed" "$@"; }

run --store sqlite
if [[ -n "${POCKET_TEST_POSTGRES_URL:-}" ]] && command -v psql >/dev/null; then
  run --store postgres --postgres-url "$POCKET_TEST_POSTGRES_URL"
else
  echo "SKIPPED the PostgreSQL drill: POCKET_TEST_POSTGRES_URL is not set or psql is missing"
fi
