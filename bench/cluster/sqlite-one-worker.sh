#!/usr/bin/env bash
# Runs/s on SQLite with one `pocket worker` process (the release binary, the offline
# zero-latency `sim` model): queues N tasks in one INSERT, starts the clock, and stops it
# when the last one has succeeded. Each run: claimed in a batch, a checkpoint after each
# step, completed (the worker's real path, store writes included).
#
#   bash bench/cluster/sqlite-one-worker.sh [N]      # default N = 20000
#
# Needs the sqlite3 command-line shell. The database is a WAL file in a temporary
# directory. Bounded: gives up after 300 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

n="${1:-20000}"
work="$(mktemp -d)"
db="$work/pocket.db"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin pocket

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

POCKET_LOG=warn ./target/release/pocket worker --store "sqlite://$db" --config "$work/pocket.toml" \
    --model sim > "$work/worker.log" 2>&1 &
pid="$!"

for _ in $(seq 1 300); do
    if [ -f "$db" ] && sqlite3 "$db" ".timeout 5000" \
        "SELECT count(*) FROM sqlite_master WHERE name = 'pocket_tasks'" 2>/dev/null | grep -q 1; then
        break
    fi
    sleep 0.1
done
sleep 1

start_ns=$(date +%s%N)
sqlite3 "$db" ".timeout 10000" "
    WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < ${n}),
        now(t) AS (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
    INSERT INTO pocket_tasks (id, agent, task, priority, capabilities, status, max_attempts,
        metadata, created_at, updated_at, run_after)
    SELECT lower(hex(randomblob(16))), 'default', 'What is ' || k || ' + 1?', 0, '[]',
        'queued', 3, 'null', t, t, t FROM i, now"

deadline=$((SECONDS + 300))
while :; do
    done_n=$(sqlite3 "$db" ".timeout 5000" \
        "SELECT count(*) FROM pocket_tasks WHERE status IN ('succeeded', 'failed')")
    [ "$done_n" -ge "$n" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "gave up: ${done_n} of ${n} finished in 300 s" >&2
        exit 1
    fi
    sleep 0.05
done
end_ns=$(date +%s%N)

failed=$(sqlite3 "$db" ".timeout 5000" "SELECT count(*) FROM pocket_tasks WHERE status = 'failed'")
ms=$(( (end_ns - start_ns) / 1000000 ))
echo "sqlite_one_worker: ${n} runs in ${ms} ms, $(( n * 1000 / (ms > 0 ? ms : 1) )) runs/s (${failed} failed)"
