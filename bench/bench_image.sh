#!/bin/sh
# Image pipeline benchmark: a procedural 4000x3000 quality-92 JPEG -> model
# tensor in C (camserve's imageio, one core) versus PIL + torchvision in the
# same run, plus overlay + PNG encode at 800 px; then the server's encode
# stage in one thread and split over all cores (cs_img_par, not pinned).
# Usage:
#   bench/bench_image.sh [RUNS]        (run from anywhere; needs gcc, pkg-config
#                                       and /usr/bin/python3 with torchvision)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-15}
work=${TMPDIR:-/tmp}/camserve-bench-image.$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT INT TERM

sh "$root/bench/build_bench_image.sh" "$work/bench_image"
"$work/bench_image" --make "$work/photo.jpg"
# pin both to one core so "one core" means the same thing for each
pin=""
command -v taskset >/dev/null 2>&1 && pin="taskset -c 0"
c_out=$($pin "$work/bench_image" "$work/photo.jpg" "$runs")
echo "$c_out"
peer_out=$(OMP_NUM_THREADS=1 $pin /usr/bin/python3 "$root/bench/peer_pil.py" "$work/photo.jpg" "$runs")
echo "$peer_out"
c_ms=$(echo "$c_out" | awk '/^jpeg->tensor/ {print $3}')
p_ms=$(echo "$peer_out" | awk '/^peer/ {print $4}')
awk -v c="$c_ms" -v p="$p_ms" 'BEGIN { printf "ratio (peer / camserve, median): %.1fx\n", p / c }'
ways=$(nproc)
[ "$ways" -gt 8 ] && ways=8
if [ "$ways" -ge 2 ]; then "$work/bench_image" --encode "$work/photo.jpg" "$runs" "$ways"
else echo "encode stage: one core, nothing to split over"; fi
