#!/usr/bin/env bash
# The peer benchmark (issue 9): the same workload — N tasks, one tool round each (two model
# calls to a stub with a fixed latency, one local `add` tool call) — on Pocket Agent, rig,
# the OpenAI Agents SDK and LangGraph, at concurrency 1, 64 and 1,024, against one
# `pocket-stub`. Prints a table; the raw JSON lines go to target/bench-peers.jsonl.
#
#   bench/peers.sh                      # defaults below; ~10 minutes on 2 cores
#   N=2000 N1=200 LATENCY_MS=20 bench/peers.sh
#
# Not run in CI (too long). Installs the Python peers (pinned in bench/python/requirements.txt)
# into target/bench-venv and builds rig (pinned, bench/rig/Cargo.lock) in bench/rig/target.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}                 # tasks per run at C=64 and C=1024
N1=${N1:-200}                # tasks per run at C=1 (each task waits 2 × LATENCY_MS)
LATENCY_MS=${LATENCY_MS:-20} # the stub's fixed latency per model call
PORT=${PORT:-18089}
CONCURRENCIES=${CONCURRENCIES:-"1 64 1024"}
FRAMEWORKS=${FRAMEWORKS:-"pocket rig openai-agents langgraph"}
TARGET=${CARGO_TARGET_DIR:-target}
VENV=target/bench-venv
OUT=target/bench-peers.jsonl

if [ -z "${SKIP_BUILD:-}" ]; then  # SKIP_BUILD=1: use the binaries already built
  echo "== building pocket-bench (release)" >&2
  cargo build --release -q -p pocket-bench
  echo "== building the rig bench (release, bench/rig/target)" >&2
  CARGO_TARGET_DIR=bench/rig/target cargo build --release -q --locked --manifest-path bench/rig/Cargo.toml
fi
echo "== Python peers in $VENV" >&2
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r bench/python/requirements.txt

ulimit -n 65536 2>/dev/null || true
"$TARGET/release/pocket-stub" --port "$PORT" --latency-ms "$LATENCY_MS" &
STUB=$!
trap 'kill "$STUB" 2>/dev/null || true' EXIT
BASE="http://127.0.0.1:$PORT/v1"
for _ in $(seq 50); do
  if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done

: > "$OUT"
for C in $CONCURRENCIES; do
  n=$N
  [ "$C" = 1 ] && n=$N1
  for fw in $FRAMEWORKS; do
    echo "== $fw, C=$C, $n tasks" >&2
    args=(--base-url "$BASE" --tasks "$n" --concurrency "$C" --latency-ms "$LATENCY_MS")
    case $fw in
      pocket) "$TARGET/release/pocket-bench" agent "${args[@]}" ;;
      rig) bench/rig/target/release/rig-bench "${args[@]}" ;;
      openai-agents) "$VENV/bin/python" bench/python/openai_agents_bench.py "${args[@]}" ;;
      langgraph) "$VENV/bin/python" bench/python/langgraph_bench.py "${args[@]}" ;;
      *) echo "unknown framework $fw" >&2; exit 2 ;;
    esac | tee -a "$OUT" >&2
  done
done

python3 - "$OUT" "$LATENCY_MS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"stub latency {sys.argv[2]} ms per model call; added latency = task latency - 2 x stub latency\n")
print("| framework | C | tasks | errors | tasks/s | CPU-ms/task | p50 added ms | p99 added ms | peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['framework']} | {r['concurrency']} | {r['tasks']} | {r['errors']} | {r['tasks_per_s']:.0f} "
          f"| {r['cpu_s_per_task']*1000:.3f} | {r['p50_added_ms']:.2f} | {r['p99_added_ms']:.2f} | {r['peak_rss_mib']:.0f} |")
PY
