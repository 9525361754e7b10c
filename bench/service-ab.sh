#!/usr/bin/env bash
# Interleaved A/B of the service hop: two variants run at once on their own ports against one
# stub, and the load generator alternates between them round by round, so a machine whose
# speed drifts from minute to minute (as the shared machines here do) moves both alike.
# Prints one line per round: CPU µs per request of the variant, the stub and the generator,
# p50 and p99 in ms, answered and sent.
#
#   OLD=target/old/pocket bench/service-ab.sh            # pocket serve: OLD binary against
#                                                        # target/release/pocket (NEW=...)
#   MODE=proxy bench/service-ab.sh                       # pocket-bench proxy: reqwest against
#                                                        # hyper as the upstream client
#   RATE=2000 ROUNDS=6 DURATION=8 bench/service-ab.sh    # the defaults
#
# Build first: cargo build --release -p pocket -p pocket-bench (and keep the OLD binary aside).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/service-common.sh

MODE=${MODE:-serve}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8}
WARMUP=1
BIN=${CARGO_TARGET_DIR:-target}/release
NEW=${NEW:-$BIN/pocket}
OLD=${OLD:-}
WORK=target/bench-ab
STUB_PORT=18290; A_PORT=18291; B_PORT=18292
mkdir -p "$WORK"
if [ "$MODE" = serve ] && [ -z "$OLD" ]; then
  echo "set OLD to the pocket binary to compare with (NEW defaults to $NEW)" >&2
  exit 2
fi

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

"$BIN/pocket-stub" --port "$STUB_PORT" --latency-ms 0 &
STUB=$!; PIDS+=($STUB)
wait_port "$STUB_PORT"
upstream="http://127.0.0.1:$STUB_PORT/v1/chat/completions"
if [ "$MODE" = proxy ]; then
  A_NAME=reqwest; B_NAME=hyper
  "$BIN/pocket-bench" proxy --listen "127.0.0.1:$A_PORT" --upstream "$upstream" --client reqwest 2>/dev/null &
  A=$!
  "$BIN/pocket-bench" proxy --listen "127.0.0.1:$B_PORT" --upstream "$upstream" --client hyper 2>/dev/null &
  B=$!
  KEY=(); MODEL=stub
else
  A_NAME=old; B_NAME=new
  write_serve_config "$WORK/pocket.toml" "$STUB_PORT" memory:
  export POCKET_BENCH_UPSTREAM_KEY=bench-upstream-key POCKET_API_KEYS=bench-key
  "$OLD" serve --config "$WORK/pocket.toml" --listen "127.0.0.1:$A_PORT" 2> "$WORK/old.log" &
  A=$!
  "$NEW" serve --config "$WORK/pocket.toml" --listen "127.0.0.1:$B_PORT" 2> "$WORK/new.log" &
  B=$!
  KEY=(--key-env POCKET_API_KEYS); MODEL=default
fi
PIDS+=($A $B)
wait_port "$A_PORT"; wait_port "$B_PORT"

echo "variant round cpu_us stub_us gen_us p50_ms p99_ms ok sent"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ "$side" = A ]; then pid=$A; port=$A_PORT; name=$A_NAME; else pid=$B; port=$B_PORT; name=$B_NAME; fi
    c0=$(cpu_ticks "$pid"); s0=$(cpu_ticks "$STUB")
    "$BIN/pocket-bench" load --url "http://127.0.0.1:$port/v1/chat/completions" --model "$MODEL" "${KEY[@]}" \
      --rate "$RATE" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --label "$name" > "$WORK/last.json"
    c1=$(cpu_ticks "$pid"); s1=$(cpu_ticks "$STUB")
    python3 - "$WORK/last.json" "$name" "$round" "$((c1 - c0))" "$((s1 - s0))" "$(getconf CLK_TCK)" \
      "$RATE" "$((DURATION + WARMUP))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, rnd, cpu, stub, tck, rate, secs = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
n = rate * secs  # every request of the run, warm-up included, used the processes' CPU
us = lambda t: round(t / tck * 1e6 / n)
print(name, rnd, us(cpu), us(stub), round(r["generator_cpu_s"] * 1e6 / n),
      f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", r["ok"], r["sent"])
PY
  done
done
