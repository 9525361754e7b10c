#!/usr/bin/env bash
# CI: the dashboard in a real browser. Starts the release binary's `pocket serve` on a temp
# SQLite store (sim models; one agent whose calculator calls need approval), then drives the
# page with playwright-core in Debian's headless Chromium (.ci/browser/dashboard.mjs): sign in,
# instances, queue and charts with data, approve from the page, the task completes. Leaves a
# screenshot at target/dashboard.png. Needs target/release/pocket (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${POCKET_BIN:-target/release/pocket}
[ -x "$bin" ] || { echo "dashboard: $bin is missing (cargo build --release first)" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
  echo "dashboard: installing Debian's chromium"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
timeout 300 npm ci --prefix .ci/browser --no-audit --no-fund

work=$(mktemp -d)
pid=""
cleanup() {
  status=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ] && [ -f "$work/serve.log" ]; then
    echo "--- pocket serve log (last 40 lines)" >&2
    tail -n 40 "$work/serve.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

cat >"$work/pocket.toml" <<'EOF'
[models.steady]
provider = "sim"
latency_ms = 150

[agents.default]
model = "steady"
tools = ["calculator"]

# Every calculator call of this agent waits for a person.
[agents.guarded]
model = "sim"
tools = ["calculator"]

[agents.guarded.approval]
required_from = "safe"
timeout_secs = 120
EOF

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="ci-dashboard-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
url="http://127.0.0.1:$port"
POCKET_API_KEYS="$key" "$bin" serve --config "$work/pocket.toml" --store "sqlite://$work/pocket.db" \
  --listen "127.0.0.1:$port" --log-dir "$work/logs" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "dashboard: pocket serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "$url/readyz" >/dev/null

mkdir -p target
POCKET_URL="$url" POCKET_KEY="$key" SCREENSHOT="$PWD/target/dashboard.png" \
  timeout 240 node .ci/browser/dashboard.mjs
echo "dashboard: ok (screenshot target/dashboard.png)"
