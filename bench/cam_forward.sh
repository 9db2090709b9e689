#!/usr/bin/env bash
# ScoreCAM and AblationCAM (one forward pass per channel of the layer) on
# the real models of ../shared/models and Debian darknet's photos: wall time
# of `camserve explain` for two builds, alternated, median of ROUNDS, and
# whether their maps are identical.
#
#   bench/cam_forward.sh BIN BIN2      # ROUNDS=3 PHOTOS="kite dog" SHARED=../shared
#                                      # METHODS="scorecam ablationcam" MODELS="A.onnx B.onnx"
#
# BIN2 is usually an older build (an A/B on the same machine).  MODELS
# defaults to ShuffleNetV2 and MobileNetV2 of SHARED/models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
new=$1
old=$2
rounds=${ROUNDS:-3}
photos=${PHOTOS:-"kite dog"}
shared=${SHARED:-$root/../shared}
methods=${METHODS:-"scorecam ablationcam"}
models=${MODELS:-"$shared/models/shufflenet-v2-fp32.onnx $shared/models/mobilenetv2-fp32.onnx"}
py=${PY:-/usr/bin/python3}
[ -d /usr/share/darknet/data ] || { echo "no /usr/share/darknet/data (Debian package darknet)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

ms() { # ms BIN ARGS...: wall milliseconds of one run
    local s e
    s=$(date +%s%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(((${#@} + 1) / 2))p"; }

echo "| model | photo | method | $new ms | $old ms | maps |"
echo "|---|---|---|---:|---:|---|"
for model in $models; do
    [ -f "$model" ] || { echo "no $model" >&2; exit 1; }
    m=$(basename "$model" .onnx)
    for f in $photos; do
        img=/usr/share/darknet/data/$f.jpg
        for meth in $methods; do
            a=() b=()
            for _ in $(seq "$rounds"); do
                a+=("$(ms "$new" explain --model "$model" --image "$img" --method "$meth" --cam-size layer --save-cam "$work/new.npy")")
                b+=("$(ms "$old" explain --model "$model" --image "$img" --method "$meth" --cam-size layer --save-cam "$work/old.npy")")
            done
            same=$("$py" -c 'import numpy as n,sys; print("identical" if (n.load(sys.argv[1]) == n.load(sys.argv[2])).all() else "differ")' \
                "$work/new.npy" "$work/old.npy")
            echo "| $m | $f | $meth | $(median "${a[@]}") | $(median "${b[@]}") | $same |"
        done
    done
done
