#!/usr/bin/env bash
# Runs every libFuzzer harness in BUILD_DIR for SECONDS each, seeded from
# tests/fuzz/corpus/<name>/ when present.  Any crash, leak or sanitizer
# report fails the run (libFuzzer exits non-zero and writes the input).
set -euo pipefail
build=$1; secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
ran=0
for f in "$build"/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  work=$(mktemp -d)
  seeds=()
  [ -d "$root/tests/fuzz/corpus/$name" ] && seeds+=("$root/tests/fuzz/corpus/$name")
  echo "fuzz: $name for ${secs}s"
  "$f" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 -artifact_prefix="$work/" \
       -print_final_stats=1 "$work" "${seeds[@]}" 2>"$work/log" || { tail -40 "$work/log"; echo "fuzz: $name FAILED (artifacts in $work)"; exit 1; }
  grep -E '^stat::number_of_executed_units' "$work/log" || true
  rm -rf "$work"
  ran=$((ran+1))
done
echo "fuzz: $ran harnesses ran without a finding"
