#!/usr/bin/env bash
# The real ImageNet models in ../shared/models (see its README.md): they load,
# and the default Grad-CAM layer is the one the README names.
#
#   bash tests/cli/shared_models.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
#
# Exit 77 (ctest: skipped) when the shared folder is not there.
set -u
bin=$1
src=$2
shared=${3:-$src/../shared}
models=$shared/models
if [ ! -d "$models" ]; then
    echo "skipped: ../shared/models not present"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# check_model FILE DEFAULT_LAYER LAYER_SHAPE(C,H,W)
check_model() {
    local file=$models/$1 want=$2 shape=$3
    if [ ! -f "$file" ]; then
        fail "$1 missing from $models"
        return
    fi
    if ! "$bin" inspect --model "$file" --json >"$tmp/out" 2>"$tmp/err"; then
        fail "$1: inspect failed: $(cat "$tmp/err")"
        return
    fi
    python3 - "$tmp/out" "$want" "$shape" "$1" <<'EOF' || fail "$1: inspect output"
import json, sys
o = json.load(open(sys.argv[1]))
want, shape, name = sys.argv[2], [int(x) for x in sys.argv[3].split(",")], sys.argv[4]
assert o["default_layer"] == want, f"default layer {o['default_layer']!r}, README says {want!r}"
d = [l for l in o["layers"] if l.get("default")]
assert len(d) == 1 and d[0]["name"] == want, d
assert d[0]["shape"] == shape, f"default layer shape {d[0]['shape']}, want {shape}"
assert o["num_classes"] == 1000, o["num_classes"]
assert o["inputs"][0]["shape"] == [1, 3, 224, 224], o["inputs"][0]["shape"]
print(f"ok:   {name}: default layer {want} {shape}, {len(o['layers'])} layers, {o['nodes']} nodes")
EOF
}

check_model mobilenetv2-fp32.onnx 627 1280,7,7
check_model shufflenet-v2-fp32.onnx 610 1024,7,7

# TODO(imageio): when `classify --image` lands, classify the darknet photos
# (/usr/share/darknet/data/*.jpg, skip if absent) with both models and check
# top-1 against ../shared/models/expected.json, with --labels
# ../shared/models/imagenet_labels.txt:
#   mobilenetv2-fp32.onnx:   dog.jpg malamute, eagle.jpg "bald eagle",
#                            giraffe.jpg zebra, horses.jpg ox, kite.jpg seashore
#   shufflenet-v2-fp32.onnx: dog.jpg malamute, giraffe.jpg zebra,
#                            kite.jpg parachute, scream.jpg "chambered nautilus"
# (preprocessing: resize shorter side 256 bilinear, center crop 224, ImageNet
# mean/std, RGB; see ../shared/models/README.md).

if [ "$fails" -ne 0 ]; then
    echo "shared_models: $fails check(s) failed"
    exit 1
fi
echo "shared_models: all checks passed"
