#!/bin/sh
# Builds bench/bench_image.c (camserve's imageio on its own: the image
# pipeline benchmark, and --make for the procedural 4000x3000 q92 photo the
# other benchmarks send) into OUT.  One build line for every script that
# needs it, so a new imageio dependency is added in one place.
#   bench/build_bench_image.sh OUT         (needs gcc and pkg-config)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
gcc -std=c11 -O2 -D_GNU_SOURCE -I"$root/include" -I"$root/src" \
    "$root/bench/bench_image.c" "$root"/src/imageio/*.c "$root/src/util/error.c" "$root/src/util/text.c" \
    "$root/src/util/team.c" \
    $(pkg-config --cflags --libs libturbojpeg spng libdeflate zlib libwebp libwebpdemux jansson) -lm -pthread \
    -o "$1"
