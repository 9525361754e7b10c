#!/usr/bin/env bash
# CI: the official `openai` Python SDK (pinned, in a venv under target/) against the release
# binary's `pocket serve` on a temp SQLite store with the `sim` model (.ci/openai_sdk.py).
# Needs target/release/pocket (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION=3.51.0
bin=${POCKET_BIN:-target/release/pocket}
[ -x "$bin" ] || { echo "openai-sdk: $bin is missing (cargo build --release first)" >&2; exit 1; }

venv=target/openai-sdk-venv
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_VERSION"
fi

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

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="ci-openai-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
url="http://127.0.0.1:$port"
POCKET_API_KEYS="$key" "$bin" serve --model sim --tool calculator --store "sqlite://$work/pocket.db" \
  --listen "127.0.0.1:$port" --log-dir "$work/logs" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "openai-sdk: pocket serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "$url/readyz" >/dev/null

POCKET_URL="$url" POCKET_KEY="$key" timeout 120 "$venv/bin/python" .ci/openai_sdk.py
