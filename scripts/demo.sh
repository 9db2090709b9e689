#!/usr/bin/env bash
# `make run`: the main job on the model the repository ships.
#   - the embedded default model (models/default/) when it is present,
#     explained on its sample images;
#   - otherwise the bundled golden MobileNetV2-style model on its test tensor;
#   - and, where ../shared/models and Debian's darknet photos exist, a real
#     ImageNet MobileNetV2 explaining a real photo.
# Overlays and heatmaps land in build/demo/.
set -euo pipefail
bin=${1:-build/camserve}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build/demo
mkdir -p "$out"

if [ -f "$root/models/default/model.onnx" ]; then
  echo "== the embedded default model"
  "$bin" inspect | head -8
  shopt -s nullglob
  samples=("$root"/web/samples/*.jpg)
  if [ ${#samples[@]} -gt 0 ]; then
    args=()
    for s in "${samples[@]:0:4}"; do args+=(--image "$s"); done
    "$bin" explain "${args[@]}" --out "$out"
  fi
else
  m=$root/tests/golden/mobilenet_v2
  echo "== bundled model: $m/model.onnx (random weights; the default model is not built yet)"
  "$bin" inspect --model "$m/model.onnx" | head -8
  "$bin" explain --model "$m/model.onnx" --tensor "$m/input.npy" --method gradcam --save-cam "$out/golden_cam.npy"
fi

shared=$root/../shared/models
photo=/usr/share/darknet/data/dog.jpg
if [ -f "$shared/mobilenetv2-fp32.onnx" ] && [ -f "$photo" ]; then
  echo
  echo "== a real model on a real photo: MobileNetV2 (ImageNet) on $photo"
  "$bin" explain --model "$shared/mobilenetv2-fp32.onnx" --labels "$shared/imagenet_labels.txt" \
    --image "$photo" --out "$out"
fi
echo
echo "overlays and heatmaps: $out"
