#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a GPU machine that has no Debian -dev
# libraries: the CUDA build of camserve and test_cuda, plus every non-glibc
# shared library they load (from ldd), except the CUDA libraries the GPU
# machine brings itself (driver libcuda, cuDNN, cuBLAS: pip's nvidia-*).
#
#   bench/gpu_bundle.sh [BUILD_DIR (build)] [OUT (bench/.gpu_bundle)]
#
# OUT and OUT.tar.xz are git-ignored.  The folder is ~67 MiB (oneDNN alone
# is 38), over the 64 MiB a device run may carry, so the tarball (~18 MiB)
# is what travels: carry ["bench/.gpu_bundle.tar.xz"]; bench/gpu.sh unpacks
# it.  Fails when the build has no CUDA backend or the tarball exceeds 60 MiB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
out=${2:-$here/.gpu_bundle}
bin=$build/camserve
[ -x "$bin" ] || { echo "gpu_bundle: no $bin (build first)" >&2; exit 1; }
"$bin" version | grep -q "CUDA runtime" || { echo "gpu_bundle: $bin has no CUDA backend (configure with -DCS_CUDA=ON)" >&2; exit 1; }
[ -x "$build/test_cuda" ] || { echo "gpu_bundle: no $build/test_cuda" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/lib"
cp "$bin" "$build/test_cuda" "$out/"
# glibc's family and the loader come from the target; the CUDA libraries
# from its driver and pip packages (too big to carry: cuBLASLt alone is
# ~500 MB).  libcudart is small and versioned: carried.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libcuda\.so|libcudnn|libcublas|libnvidia)'
for f in "$out/camserve" "$out/test_cuda"; do
    ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
        if echo "$name" | grep -qE "$skip"; then continue; fi
        [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done
done
# the 4000x3000 quality-92 JPEG of bench/bench_image.sh, for the server's end-to-end step
if [ -f /tmp/camserve-gpu-photo.jpg ]; then cp /tmp/camserve-gpu-photo.jpg "$out/photo.jpg"; else
    root=$(cd "$here/.." && pwd)
    sh "$root/bench/build_bench_image.sh" "$out/bench_image.tmp"
    "$out/bench_image.tmp" --make "$out/photo.jpg"
    rm -f "$out/bench_image.tmp"
fi
# what was left to the target, for the record
{ ldd "$out/camserve"; ldd "$out/test_cuda"; } | awk '{print $1}' | grep -E "$skip" | sort -u > "$out/from_target.txt"
tar -cJf "$out.tar.xz" -C "$out" .
size=$(du -sm "$out.tar.xz" | cut -f1)
echo "gpu_bundle: $out: $(ls "$out/lib" | wc -l) libraries, $(du -sm "$out" | cut -f1) MiB; $out.tar.xz ${size} MiB; from the target: $(tr '\n' ' ' < "$out/from_target.txt")"
[ "$size" -le 60 ] || { echo "gpu_bundle: ${size} MiB does not fit the 64 MiB carry" >&2; exit 1; }
