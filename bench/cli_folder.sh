#!/usr/bin/env bash
# camserve explain over a folder of 4000x3000 photos (predictions, Grad-CAM,
# a heatmap and an overlay PNG per photo), against the PyTorch + PIL script
# that does the same file by file (bench/peer_folder.py), in the same run.
#
#   bench/cli_folder.sh BIN [BIN2 ...]   # MODEL=resnet50 N=12 ROUNDS=3 THREADS=$(nproc)
#
# The folder holds N copies of bench_image's procedural quality-92 photo
# (bench/bench_image.sh makes it); FOLDER=DIR uses a folder of yours
# instead.  Each round runs every binary, then the peer, once over the whole
# folder; the medians of the rounds are compared.  Give an older build as
# BIN2 for an A/B on the same machine.  MODEL is one of
# bench/export_models.py's, exported into bench/.peer by bench/run.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${MODEL:-resnet50}
n=${N:-12}
rounds=${ROUNDS:-3}
threads=${THREADS:-$(nproc)}
onnx=$root/bench/.peer/$model.onnx
[ -f "$onnx" ] || { echo "no $onnx: run bench/run.sh once (it exports the models)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
folder=${FOLDER:-}
if [ -z "$folder" ]; then
  sh "$root/bench/build_bench_image.sh" "$work/bench_image"
  folder=$work/photos
  mkdir -p "$folder"
  "$work/bench_image" --make "$folder/p01.jpg" >/dev/null
  for i in $(seq 2 "$n"); do cp "$folder/p01.jpg" "$folder/$(printf 'p%02d.jpg' "$i")"; done
fi
count=$(find "$folder" -maxdepth 1 -iname '*.jp*g' -o -maxdepth 1 -iname '*.png' | wc -l)
echo "camserve explain over $count images of $folder, $model, $threads threads, $rounds rounds"
declare -A times
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    rm -rf "$work/out"
    t0=$(date +%s%N)
    "$bin" explain --model "$onnx" --image "$folder" --out "$work/out" --threads "$threads" >/dev/null
    t1=$(date +%s%N)
    times[$bin]+="$(( (t1 - t0) / 1000 )) "
  done
  peer=$(/usr/bin/python3 "$root/bench/peer_folder.py" "$model" "$folder" "$work/peer" --threads "$threads" --rounds 1)
  times[peer]+="$(echo "$peer" | jq '.median_ms * 1000 | round') "
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)] / 1000}'; }
peer_ms=$(echo "${times[peer]}" | median)
printf '| %s | median ms per folder | ms per image | peer / this |\n|---|---:|---:|---:|\n' "run"
for bin in "$@"; do
  ms=$(echo "${times[$bin]}" | median)
  awk -v b="$bin" -v m="$ms" -v c="$count" -v p="$peer_ms" 'BEGIN { printf "| %s | %.1f | %.1f | %.2fx |\n", b, m, m / c, p / m }'
done
awk -v m="$peer_ms" -v c="$count" 'BEGIN { printf "| peer torch+PIL | %.1f | %.1f | 1.00x |\n", m, m / c }'
