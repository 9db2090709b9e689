#!/usr/bin/env bash
# Does batching pay on this CPU?  Per-image cost of a batch of B (default 8)
# against batch 1, forward and GradCAM explain, for ResNet-50 and the
# embedded default model, at 1 thread and at all cores.  This is why
# `camserve serve` defaults to --max-batch 1 on the CPU (docs/api.md).
# Usage: bench/batch.sh [CAMSERVE_BIN]   (ITERS=12, B=8; OUT= a markdown file)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/camserve}
ITERS=${ITERS:-12}
B=${B:-8}
PY=${PY:-/usr/bin/python3}
PEER_DIR=${PEER_DIR:-$HERE/.peer}
OUT=${OUT:-/dev/stdout}
[ -f "$PEER_DIR/resnet50.onnx" ] || "$PY" "$HERE/export_models.py" "$PEER_DIR" --models resnet50 >&2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# the default model takes an image; a small JPEG made here is enough
"$PY" -c 'from PIL import Image; Image.new("RGB", (320, 240), (120, 80, 40)).save("'"$tmp"'/i.jpg")'

# per-image median ms of STAGE in a bench JSON
pi() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["stages"][sys.argv[2]]["median_ms"] / d["batch"]))' "$1" "$2"; }

{
echo "# Batch $B vs batch 1 on the CPU"
echo
echo "\`bench/batch.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, median of $ITERS runs after 2 warm-up runs;"
echo "ms per image (a batch's time / $B).  The two are measured back to back, so compare within a row."
echo
echo "| model | threads | forward b1 | forward b$B | b$B / b1 | explain b1 | explain b$B | b$B / b1 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for name in resnet50 default; do
    if [ "$name" = resnet50 ]; then src=(--model "$PEER_DIR/resnet50.onnx" --tensor "$PEER_DIR/input.npy"); else src=(--image "$tmp/i.jpg"); fi
    for t in 1 "$(nproc)"; do
        for b in 1 "$B"; do
            "$BIN" bench "${src[@]}" --threads "$t" --batch "$b" --iters "$ITERS" --warmup 2 --method gradcam --json > "$tmp/$b.json"
        done
        f1=$(pi "$tmp/1.json" forward) fb=$(pi "$tmp/$B.json" forward)
        e1=$(pi "$tmp/1.json" explain) eb=$(pi "$tmp/$B.json" explain)
        echo "| $name | $t | $f1 | $fb | $(awk -v a="$fb" -v b="$f1" 'BEGIN { printf "%.2f", a / b }') | $e1 | $eb | $(awk -v a="$eb" -v b="$e1" 'BEGIN { printf "%.2f", a / b }') |"
    done
done
} > "$OUT"
