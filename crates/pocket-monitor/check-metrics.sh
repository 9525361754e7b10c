#!/usr/bin/env bash
# Checks the /metrics exposition (Prometheus text format) with `promtool check metrics`.
# promtool comes with Debian's `prometheus` package; without it the check says so and passes.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "check-metrics: skipped (promtool not found; Debian package: prometheus)"
  exit 0
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo run -q -p pocket-monitor --example exposition >"$out"
promtool check metrics <"$out"
echo "check-metrics: promtool accepts the exposition ($(grep -c '^# TYPE' "$out") metric families)"
