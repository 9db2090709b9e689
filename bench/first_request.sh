#!/usr/bin/env bash
# How long a fresh server takes to be ready, and how its first explain
# compares with the next ones (the warm-up at start should make them alike).
#
#   bench/first_request.sh BIN [BIN2 ...]     # MODEL=..., ROUNDS=3, PORT=18561
#
# Each round starts each binary in turn on MODEL (default: the ResNet-50 of
# bench/export_models.py), waits for /readyz, sends 4 small JPEGs it has not
# seen and prints the server's timings_ms.total of each, then stops it.
# Give an older build as BIN2 for an A/B on the same machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${MODEL:-$root/bench/.peer/resnet50.onnx}
rounds=${ROUNDS:-3}
port=${PORT:-18561}
[ -f "$model" ] || { echo "no $model: run bench/run.sh once (it exports the models)" >&2; exit 1; }
imgs=("$root"/tests/data/eval_small/airplane/03.jpg "$root"/tests/data/eval_small/airplane/15.jpg
      "$root"/tests/data/eval_small/apple/05.jpg "$root"/tests/data/eval_small/apple/17.jpg)
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    t0=$(date +%s%N)
    "$bin" serve --model "$model" --host 127.0.0.1 --port "$port" --cache-mem-mb 0 >/dev/null 2>&1 &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
      kill -0 "$pid" 2>/dev/null || { echo "$bin exited" >&2; exit 1; }
      sleep 0.02
    done
    t1=$(date +%s%N)
    printf '%s round %d: ready after %d ms; total ms of requests 1-4:' "$bin" "$r" $(( (t1 - t0) / 1000000 ))
    for f in "${imgs[@]}"; do
      curl -sf -H "Content-Type: image/jpeg" --data-binary @"$f" "http://127.0.0.1:$port/v1/explain" |
        jq -j '" \(.timings_ms.total * 10 | round / 10)"'
    done
    echo
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
