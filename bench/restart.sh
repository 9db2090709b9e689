#!/usr/bin/env bash
# Restart-to-ready of `camserve serve` with ResNet-50: the time from exec to
# the first 200 from /readyz, cold (empty --cache-dir) and warm (the
# prepared-model cache written by the previous start).
# Usage: bench/restart.sh [CAMSERVE_BIN]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/camserve}
PEER_DIR=${PEER_DIR:-$HERE/.peer}
[ -f "$PEER_DIR/resnet50.onnx" ] || /usr/bin/python3 "$HERE/export_models.py" "$PEER_DIR" --models resnet50 >&2
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
start() {
  local t0 t1
  t0=$(date +%s%N)
  "$BIN" serve --model "$PEER_DIR/resnet50.onnx" --host 127.0.0.1 --port "$port" --workers 1 \
      --cache-dir "$dir" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 4000); do
    if curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q 200; then
      t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); break
    fi
    sleep 0.002
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
cold=$(start); warm1=$(start); warm2=$(start)
echo "| ResNet-50 serve, exec → /readyz 200 | cold (empty cache) | warm (prepared-model cache) |"
echo "|---|---:|---:|"
echo "| ms | $cold | $warm1, $warm2 |"
