# Sourced by bench/gpu.sh and bench/gpu_prep.sh on a GPU machine: unpacks
# the bundle of bench/gpu_bundle.sh and sets what camserve needs there.
#   in:  here (bench/), B (the bundle folder), log (a function)
#   out: CSLD (camserve's LD_LIBRARY_PATH), CS_NVJPEG_LIB (exported),
#        cs (runs a command with CSLD), gpu (name, driver, memory), slug
if [ ! -x "$B/camserve" ] && [ -f "$B.tar.xz" ]; then
    mkdir -p "$B" && tar -xJf "$B.tar.xz" -C "$B"
fi
[ -x "$B/camserve" ] || { echo "$0: no $B/camserve: run bench/gpu_bundle.sh where camserve was built" >&2; exit 1; }
# CUDA libraries of the pip packages (nvidia is a namespace package)
nvlibs=$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    dirs = sorted({d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib"))})
    dirs += sorted({d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib64"))})
    print(":".join(dirs))
except Exception:
    pass
PY
)
# only for camserve's binaries: the bundle's libstdc++/libgomp must not
# shadow newer ones PyTorch needs
CSLD="$B/lib${nvlibs:+:$nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# nvJPEG for the GPU image path (src/cuda/gpuprep.c dlopens it): the pip
# package's, the toolkit's, or one bundled with torchvision
if [ -z "${CS_NVJPEG_LIB:-}" ]; then
    CS_NVJPEG_LIB=$( { for d in ${nvlibs//:/ } /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu; do ls "$d"/libnvjpeg.so* 2>/dev/null; done
        python3 -c 'import torchvision, glob, os; print("\n".join(glob.glob(os.path.join(os.path.dirname(torchvision.__file__), "..", "torchvision.libs", "libnvjpeg*"))))' 2>/dev/null; } | head -1)
fi
export CS_NVJPEG_LIB
cs() { env LD_LIBRARY_PATH="$CSLD" "$@"; }
log "camserve's LD_LIBRARY_PATH=$CSLD"
log "nvJPEG: ${CS_NVJPEG_LIB:-not found (the GPU image path falls back to the CPU)}"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)
[ -n "$gpu" ] || gpu="unknown GPU"
slug=$(echo "$gpu" | cut -d, -f1 | tr 'A-Z' 'a-z' | sed 's/nvidia //; s/[^a-z0-9]\+/-/g; s/-$//')
