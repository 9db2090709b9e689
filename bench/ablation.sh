#!/usr/bin/env bash
# AblationCAM on ResNet-50 at layer4 (the default layer), batch 1: camserve
# (forward + 2048 ablated runs of the network's tail + map), the same binary
# with CS_NO_PRUNE=1 (every ablated run through the whole network, as
# before the override plans were pruned), and PyTorch in the same run
# (bench/peer_ablation.py: the tail only, and pytorch-grad-cam's whole
# network per batch, scaled from a few batches).
# Usage: bench/ablation.sh [CAMSERVE_BIN]     (ITERS=3)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/camserve}
ITERS=${ITERS:-3}
PY=${PY:-/usr/bin/python3}
PEER_DIR=${PEER_DIR:-$HERE/.peer}
T=${THREADS:-$(nproc)}
[ -f "$PEER_DIR/resnet50.onnx" ] || "$PY" "$HERE/export_models.py" "$PEER_DIR" --models resnet50 >&2
M=$PEER_DIR/resnet50.onnx X=$PEER_DIR/input.npy
j() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(round($2, 1))" "$1"; }
r() { "$PY" -c "print(f'{float(\"$1\")/float(\"$2\"):.1f}')"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$BIN" bench --model "$M" --tensor "$X" --iters "$ITERS" --warmup 1 --threads "$T" --method ablationcam --json >"$tmp/c.json"
CS_NO_PRUNE=1 "$BIN" bench --model "$M" --tensor "$X" --iters 1 --warmup 1 --threads "$T" --method ablationcam --json >"$tmp/full.json"
"$PY" "$HERE/peer_ablation.py" --threads "$T" --iters "$ITERS" --dir "$PEER_DIR" >"$tmp/t.json"
c=$(j "$tmp/c.json" 'd["stages"]["explain"]["median_ms"]')
cf=$(j "$tmp/full.json" 'd["stages"]["explain"]["median_ms"]')
tt=$(j "$tmp/t.json" 'd["tail_ms"]')
tf=$(j "$tmp/t.json" 'd["full_ms_scaled"]')
echo "ResNet-50 AblationCAM at layer4, batch 1, 2048 channels in batches of 32, $T threads, $(date -u +%Y-%m-%d)"
echo
echo "| | ms | / camserve |"
echo "|---|---:|---:|"
echo "| camserve (forward + ablated tail runs + map; median of $ITERS) | $c | 1.0 |"
echo "| camserve, CS_NO_PRUNE=1 (whole network per ablated run; 1 run) | $cf | $(r "$cf" "$c") |"
echo "| PyTorch, the tail only (avgpool + fc per batch; median of $ITERS) | $tt | $(r "$tt" "$c") |"
echo "| PyTorch, whole network per batch as pytorch-grad-cam ($(j "$tmp/t.json" 'd["full_batch_ms"]') ms a batch x 64) | $tf | $(r "$tf" "$c") |"
