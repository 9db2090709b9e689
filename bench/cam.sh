#!/usr/bin/env bash
# Grad-CAM cost on ResNet-50, batch 1, in one run against PyTorch:
#   camserve forward (no gradient), then explain at layer4's output (the
#   default layer) and at layer3's output: forward keeping the layer +
#   backward to it + map; PyTorch's hook GradCAM at the same modules, with
#   the backward stopped at the layer ("layer") and as pytorch-grad-cam
#   does it, a full backward with weight gradients ("full").
#   Also ScoreCAM's and AblationCAM's cost (camserve; few iterations).
# Usage: bench/cam.sh [CAMSERVE_BIN]     (ITERS=20 by default)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/camserve}
ITERS=${ITERS:-20}
PY=${PY:-/usr/bin/python3}
PEER_DIR=${PEER_DIR:-$HERE/.peer}
T=${THREADS:-$(nproc)}
[ -f "$PEER_DIR/resnet50.onnx" ] || "$PY" "$HERE/export_models.py" "$PEER_DIR" --models resnet50 >&2
M=$PEER_DIR/resnet50.onnx X=$PEER_DIR/input.npy
L4=$("$BIN" inspect --model "$M" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["default_layer"])')
L3=/layer3/layer3.5/relu_2/Relu_output_0
j() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(round($2, 2))" "$1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$BIN" bench --model "$M" --tensor "$X" --iters "$ITERS" --threads "$T" --method gradcam --layer "$L4" --json > "$tmp/c4.json"
"$BIN" bench --model "$M" --tensor "$X" --iters "$ITERS" --threads "$T" --method gradcam --layer "$L3" --json > "$tmp/c3.json"
"$PY" "$HERE/peer_torch.py" resnet50 --iters "$ITERS" --threads "$T" --dir "$PEER_DIR" --gradcam layer4 > "$tmp/t4.json"
"$PY" "$HERE/peer_torch.py" resnet50 --iters "$ITERS" --threads "$T" --dir "$PEER_DIR" --gradcam layer3 > "$tmp/t3.json"
"$PY" "$HERE/peer_torch.py" resnet50 --iters "$((ITERS / 4 + 1))" --threads "$T" --dir "$PEER_DIR" --gradcam layer4 --gradcam-mode full > "$tmp/tf.json"

fw=$(j "$tmp/c4.json" 'd["stages"]["forward"]["median_ms"]')
e4=$(j "$tmp/c4.json" 'd["stages"]["explain"]["median_ms"]'); e3=$(j "$tmp/c3.json" 'd["stages"]["explain"]["median_ms"]')
t4=$(j "$tmp/t4.json" 'd["stages"]["gradcam"]["median_ms"]'); t3=$(j "$tmp/t3.json" 'd["stages"]["gradcam"]["median_ms"]')
tf=$(j "$tmp/tf.json" 'd["stages"]["gradcam"]["median_ms"]')
r() { "$PY" -c "print(f'{float(\"$1\")/float(\"$2\"):.2f}')"; }
echo "ResNet-50, batch 1, $T threads, median of $ITERS, $(date -u +%Y-%m-%d)"
echo
echo "| | camserve ms | x camserve forward | PyTorch hook GradCAM ms | PyTorch / camserve |"
echo "|---|---:|---:|---:|---:|"
echo "| forward only | $fw | 1.00 | | |"
echo "| GradCAM at layer4 ($L4) | $e4 | $(r "$e4" "$fw") | $t4 (backward to the layer) | $(r "$t4" "$e4") |"
echo "| GradCAM at layer3 ($L3) | $e3 | $(r "$e3" "$fw") | $t3 (backward to the layer) | $(r "$t3" "$e3") |"
echo "| GradCAM at layer4, full backward as pytorch-grad-cam | | | $tf | $(r "$tf" "$e4") |"

# the methods that need extra forwards: a few iterations are enough
for meth in scorecam ablationcam; do
  "$BIN" bench --model "$M" --tensor "$X" --iters 1 --warmup 1 --threads "$T" --method "$meth" --json > "$tmp/$meth.json"
  echo "| $meth at layer4 (camserve, 1 run) | $(j "$tmp/$meth.json" 'd["stages"]["explain"]["median_ms"]') | $(r "$(j "$tmp/$meth.json" 'd["stages"]["explain"]["median_ms"]')" "$fw") | | |"
done
