#!/usr/bin/env bash
# ScoreCAM and AblationCAM (one forward pass per channel of the layer) on
# the real models of ../shared/models and Debian darknet's photos: wall time
# of `camserve explain` for two builds, alternated, median of ROUNDS, and
# whether their maps are identical.
#
#   bench/cam_forward.sh BIN BIN2      # ROUNDS=3 PHOTOS="kite dog" SHARED=../shared
#
# BIN2 is usually an older build (an A/B on the same machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
new=$1
old=$2
rounds=${ROUNDS:-3}
photos=${PHOTOS:-"kite dog"}
shared=${SHARED:-$root/../shared}
py=${PY:-/usr/bin/python3}
[ -d "$shared/models" ] || { echo "no $shared/models" >&2; exit 1; }
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
for m in shufflenet-v2 mobilenetv2; do
    model=$shared/models/$m-fp32.onnx
    for f in $photos; do
        img=/usr/share/darknet/data/$f.jpg
        for meth in scorecam ablationcam; do
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
