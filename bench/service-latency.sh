#!/usr/bin/env bash
# The service overhead benchmark (issue 7): what `pocket serve` adds to
# `POST /v1/chat/completions` over an OpenAI-compatible upstream. An open-loop generator
# (`pocket-bench load`: fixed arrival rate, each request timed from when it is sent) loads
#   1. the stub directly,
#   2. `pocket-bench proxy`, a bare pass-through to the stub (axum in as `pocket serve`,
#      reqwest out; `pocket serve` itself drives hyper connections directly, see
#      crates/pocket-models/src/direct.rs): one more hop through general-purpose clients, then
#   3. `pocket serve` (release binary) whose agent's model is the openai provider at the stub
#      (no tools: one model call per request; the stub answers text at once),
# at each rate, and prints both and the difference. Raw JSON lines: target/bench-service.jsonl.
#
#   bench/service-latency.sh
#   RATES="1000 5000" DURATION=10 STORE=memory: bench/service-latency.sh
#   REPEAT=3 bench/service-latency.sh   # 3 rounds of stub, proxy, serve per rate; medians
#   EVEN=1 bench/service-latency.sh     # requests evenly spaced, not in 1 ms bursts
#   PIN=1 bench/service-latency.sh      # the proxy and pocket serve on CPU 0, the generator
#                                       # and the stub on CPU 1 (taskset)
#   PROXY_CLIENT=hyper bench/service-latency.sh  # the proxy forwards with hyper's own client
#                                       # instead of reqwest (what reqwest costs per hop)
#
# Without PIN everything (generator, pocket serve, stub) shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/service-common.sh

RATES=${RATES:-"1000 5000"}
DURATION=${DURATION:-10}     # measured seconds per run
REPEAT=${REPEAT:-1}          # rounds of (stub, proxy, serve) per rate
WARMUP=${WARMUP:-2}          # unmeasured seconds first
LATENCY_MS=${LATENCY_MS:-0}  # the stub's fixed latency
STORE=${STORE:-memory:}      # pocket serve's task store
PROFILE=${PROFILE:-}         # set: `perf record` pocket serve during its run at the last rate
PIN=${PIN:-}                 # set: targets on CPU 0, generator and stub on CPU 1
EVEN=${EVEN:-}               # set: requests evenly spaced (pocket-bench load --even)
PROXY_CLIENT=${PROXY_CLIENT:-reqwest}  # the proxy's upstream client: reqwest or hyper
STUB_PORT=${STUB_PORT:-18090}
SERVE_PORT=${SERVE_PORT:-18091}
PROXY_PORT=${PROXY_PORT:-18092}
TARGET=${CARGO_TARGET_DIR:-target}
WORK=target/bench-service
OUT=target/bench-service.jsonl

if [ -z "${SKIP_BUILD:-}" ]; then  # SKIP_BUILD=1: use the binaries already built
  echo "== building pocket and pocket-bench (release)" >&2
  cargo build --release -q -p pocket -p pocket-bench
fi
mkdir -p "$WORK"
write_serve_config "$WORK/pocket.toml" "$STUB_PORT" "$STORE"

ulimit -n 65536 2>/dev/null || true
ON_SERVER=(); ON_CLIENT=(); LOAD_OPTS=()
if [ -n "$EVEN" ]; then LOAD_OPTS=(--even); fi
if [ -n "$PIN" ]; then
  ON_SERVER=(taskset -c 0); ON_CLIENT=(taskset -c 1)
fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

"${ON_CLIENT[@]}" "$TARGET/release/pocket-stub" --port "$STUB_PORT" --latency-ms "$LATENCY_MS" &
STUB_PID=$!
PIDS+=($STUB_PID)
wait_port "$STUB_PORT"

"${ON_SERVER[@]}" "$TARGET/release/pocket-bench" proxy --listen "127.0.0.1:$PROXY_PORT" \
  --upstream "http://127.0.0.1:$STUB_PORT/v1/chat/completions" --client "$PROXY_CLIENT" \
  2> "$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
wait_port "$PROXY_PORT"

export POCKET_BENCH_UPSTREAM_KEY=bench-upstream-key
export POCKET_API_KEYS=bench-key
BIN=$(cd "$TARGET/release" && pwd)
(cd "$WORK" && exec "${ON_SERVER[@]}" "$BIN/pocket" serve --config pocket.toml --listen "127.0.0.1:$SERVE_PORT" 2> serve.log) &
SERVE_PID=$!
PIDS+=($SERVE_PID)
wait_port "$SERVE_PORT"

: > "$OUT"
for R in $RATES; do
 for REP in $(seq "$REPEAT"); do
  for target in stub proxy serve; do
    if [ "$target" = stub ]; then
      url="http://127.0.0.1:$STUB_PORT/v1/chat/completions"; model=stub; key=()
    elif [ "$target" = proxy ]; then
      url="http://127.0.0.1:$PROXY_PORT/v1/chat/completions"; model=stub; key=()
    else
      url="http://127.0.0.1:$SERVE_PORT/v1/chat/completions"; model=default; key=(--key-env POCKET_API_KEYS)
    fi
    echo "== $target at $R/s (round $REP of $REPEAT)" >&2
    PERF=
    if [ -n "$PROFILE" ] && [ "$target" = serve ] && [ "$R" = "${RATES##* }" ] && [ "$REP" = "$REPEAT" ]; then
      perf record -q -F 999 -g -o "$WORK/perf.data" -p "$SERVE_PID" -- sleep "$((WARMUP + DURATION))" 2>/dev/null &
      PERF=$!
    fi
    # CPU the target process uses over the whole run (warm-up included), from /proc.
    case $target in stub) TPID=$STUB_PID ;; proxy) TPID=$PROXY_PID ;; *) TPID=$SERVE_PID ;; esac
    cpu0=$(cpu_ticks "$TPID"); cs0=$(ctx_switches "$TPID")
    "${ON_CLIENT[@]}" "$TARGET/release/pocket-bench" load --url "$url" --model "$model" "${key[@]}" \
      --rate "$R" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --label "$target" "${LOAD_OPTS[@]}" \
      > "$WORK/last.json"
    cpu1=$(cpu_ticks "$TPID"); cs1=$(ctx_switches "$TPID")
    python3 - "$WORK/last.json" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$(cut -d' ' -f1 /proc/loadavg)" "$((WARMUP + DURATION))" "$REP" "$((cs1 - cs0))" <<'PY' | tee -a "$OUT" >&2
import json, sys
r = json.load(open(sys.argv[1]))
r["target_cpu_s"] = int(sys.argv[2]) / int(sys.argv[3])
r["loadavg_1m"] = float(sys.argv[4])
r["run_s"] = int(sys.argv[5])
r["round"] = int(sys.argv[6])
r["target_ctx_switches"] = int(sys.argv[7])
print(json.dumps(r))
PY
    if [ -n "$PERF" ]; then
      wait "$PERF" || true
      perf report -i "$WORK/perf.data" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -50 > "$WORK/perf.txt" || true
      echo "== profile of pocket serve at $R/s: $WORK/perf.txt" >&2
    fi
  done
 done
done

python3 - "$OUT" "$STORE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"pocket serve store: {sys.argv[2]}\n")
print("| target | rate/s (achieved) | round | ok | 429 shed | other errors | dropped | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | gen. p99 start lag ms | target CPU µs/req | target ctx sw/req | load avg |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
by = {}
for r in rows:
    by[(r["label"], r["target_rate"], r["round"])] = r
    # Every request of the run (warm-up too) used the target's CPU: divide by all of them.
    total = r["target_rate"] * r.get("run_s", 0)
    cpu_us = r.get("target_cpu_s", 0) * 1e6 / total if total else 0
    cs = r.get("target_ctx_switches", 0) / total if total else 0
    print(f"| {r['label']} | {r['target_rate']:.0f} ({r['achieved_rate']:.0f}) | {r['round']} | {r['ok']} | {r.get('shed', 0)} | {r['errors'] - r.get('shed', 0)} | {r['dropped']} "
          f"| {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['max_ms']:.2f} | {r['p99_start_lag_ms']:.3f} "
          f"| {cpu_us:.0f} | {cs:.2f} | {r.get('loadavg_1m', 0):.2f} |")
print("\nOverhead over the stub directly, paired within each round (the stub runs just before):")
print("of the bare proxy (one more hop) and of pocket serve; median over the rounds [min, max].\n")
print("| rate/s | rounds | proxy p50 ms | proxy p99 ms | serve p50 ms | serve p99 ms |")
print("|---:|---:|---:|---:|---:|---:|")
def overloaded(r):
    return r["ok"] < 0.99 * (r["sent"] + r["dropped"])
def cell(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
for rate in sorted({k[1] for k in by if k[0] == "stub"}):
    rounds = sorted({k[2] for k in by if k[0] == "stub" and k[1] == rate})
    cells = []
    for label in ("proxy", "serve"):
        d50, d99, bad = [], [], 0
        for n in rounds:
            s, r = by[("stub", rate, n)], by.get((label, rate, n))
            if r is None:
                continue
            if overloaded(r):
                bad += 1
                continue
            d50.append(r["p50_ms"] - s["p50_ms"])
            d99.append(r["p99_ms"] - s["p99_ms"])
        note = f" ({bad} overloaded)" if bad else ""
        cells += [cell(d50) + note, cell(d99)]
    print(f"| {rate:.0f} | {len(rounds)} | " + " | ".join(cells) + " |")
PY
