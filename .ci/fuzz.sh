#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable
# rustc take the -Z sanitizer flags cargo-fuzz passes. Each target runs for FUZZ_SECS (25 s by
# default) from the seeds in fuzz/seeds/; a crash fails CI and leaves its input in
# fuzz/artifacts/TARGET/. Reproduce one with:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -q "$version"; then
  cargo install --locked cargo-fuzz --version "$version"
fi

secs="${FUZZ_SECS:-25}"
# Outside the clone so that a later CI run on the same machine builds incrementally.
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/pocket-fuzz-target}"
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O --target-dir "$target_dir"
for target in sse_stream tool_args config api_bodies; do
  corpus="$target_dir/corpus/$target"
  mkdir -p "$corpus"
  cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  echo "== fuzz $target for ${secs} s"
  log="$target_dir/$target.log"
  status=0
  timeout --signal=KILL $((secs + 120)) \
    cargo fuzz run -O --target-dir "$target_dir" "$target" "$corpus" -- \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" "$log" || true
  if [[ $status -ne 0 ]]; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed (exit $status); its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzzing ok"
