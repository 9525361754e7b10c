#!/usr/bin/env bash
# Runs/s on PostgreSQL with two `pocket worker` processes (the release binary, the offline
# zero-latency `sim` model): queues N tasks in one INSERT, starts the clock, and stops it
# when the last one has succeeded. Each run: claimed in a batch, a checkpoint after each
# step, completed (the workers' real path, store writes included).
#
#   bash bench/cluster/postgres-two-workers.sh [N]      # default N = 20000
#
# POCKET_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) names the
# database; the benchmark works in its own schema `pocket_bench`, dropped and made anew.
# Needs psql. Bounded: gives up after 300 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

n="${1:-20000}"
base="${POCKET_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
schema=pocket_bench
url="${base}?options[search_path]=${schema}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin pocket
psql -q "$base" -c "DROP SCHEMA IF EXISTS ${schema} CASCADE" -c "CREATE SCHEMA ${schema}"

cat > "$work/pocket.toml" <<'TOML'
[cluster]
min_instances = 4
max_instances = 4
instance_concurrency = 256
claim_batch = 256
poll_interval_ms = 5
max_queued = 10000000

[monitoring]
level = "warn"
TOML

for w in 1 2; do
    POCKET_LOG=warn ./target/release/pocket worker --store "$url" --config "$work/pocket.toml" \
        --model sim > "$work/worker$w.log" 2>&1 &
    pids+=("$!")
done

# Both workers have migrated the schema once the table exists and they hold no lock on it.
for _ in $(seq 1 300); do
    if psql -qtA "$base" -c "SELECT to_regclass('${schema}.pocket_tasks') IS NOT NULL" | grep -q t; then
        break
    fi
    sleep 0.1
done
sleep 1

start_ns=$(date +%s%N)
psql -q "$base" -c "
    INSERT INTO ${schema}.pocket_tasks (id, agent, task, priority, capabilities, status,
        max_attempts, metadata, created_at, updated_at, run_after)
    SELECT gen_random_uuid()::text, 'default', 'What is ' || i || ' + 1?', 0, '{}', 'queued',
        3, 'null', t, t, t
    FROM generate_series(1, ${n}) AS i,
        (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t) AS now"

deadline=$((SECONDS + 300))
while :; do
    done_n=$(psql -qtA "$base" -c "SELECT count(*) FROM ${schema}.pocket_tasks WHERE status IN ('succeeded', 'failed')")
    [ "$done_n" -ge "$n" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "gave up: ${done_n} of ${n} finished in 300 s" >&2
        exit 1
    fi
    sleep 0.05
done
end_ns=$(date +%s%N)

failed=$(psql -qtA "$base" -c "SELECT count(*) FROM ${schema}.pocket_tasks WHERE status = 'failed'")
ms=$(( (end_ns - start_ns) / 1000000 ))
echo "postgres_two_workers: ${n} runs in ${ms} ms, $(( n * 1000 / (ms > 0 ? ms : 1) )) runs/s (${failed} failed)"
