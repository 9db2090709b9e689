#!/usr/bin/env bash
# The one GPU run of issue 8, for a machine lent for ~15 minutes (H100/H200,
# no Debian -dev libraries, PyTorch + pip nvidia-* CUDA libraries).  Prepare
# on the development machine first:
#
#   cmake -S . -B build -DCS_CUDA=ON && cmake --build build -j2
#   bench/gpu_bundle.sh                      # -> bench/.gpu_bundle.tar.xz (ignored, ~18 MiB)
#
# then, on the GPU machine, from the repository root (carry
# bench/.gpu_bundle.tar.xz; it is unpacked into bench/.gpu_bundle):
#
#   bash bench/gpu.sh                        # <= 8 minutes
#
# Steps, each under its own timeout so the whole stays inside the budget:
#   1. the GPU parity tests (test_cuda: every golden family + the default
#      model, fp32/fp16/bf16 against the CPU backend, GradCAM, graph replay);
#   2. ResNet-50 (seeded random weights) exported by bench/peer_torch_gpu.py;
#   3. camserve bench on cuda: batch-1 forward, GradCAM at layer4 and at
#      layer3 (forward + backward + map), batch-64 throughput; fp16 and fp32;
#   4. the PyTorch peers in the same run (eager autocast, hook GradCAM,
#      torch.compile with CUDA graphs);
#   5. a markdown report naming the GPU: $OUT/gpu-<gpu>.md (and the raw JSON),
#      also copied to bench/results/.
# Nothing here is assumed to have worked: a failed step is reported as such.
set -u
t0=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
B=${GPU_BUNDLE:-$here/.gpu_bundle}
OUT=${OUT:-$here/results}
W=$(mktemp -d)
PEER=$W/peer
mkdir -p "$OUT" "$PEER"
log() { echo "[gpu.sh $(( $(date +%s) - t0 ))s] $*" >&2; }
left() { echo $(( 470 - ($(date +%s) - t0) )); } # seconds left of a 470 s plan (8 min minus the report)

if [ ! -x "$B/camserve" ] && [ -f "$B.tar.xz" ]; then
    mkdir -p "$B" && tar -xJf "$B.tar.xz" -C "$B"
fi
[ -x "$B/camserve" ] || { echo "gpu.sh: no $B/camserve: run bench/gpu_bundle.sh where camserve was built" >&2; exit 1; }
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
cs() { env LD_LIBRARY_PATH="$CSLD" "$@"; }
log "camserve's LD_LIBRARY_PATH=$CSLD"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)
[ -n "$gpu" ] || gpu="unknown GPU"
slug=$(echo "$gpu" | cut -d, -f1 | tr 'A-Z' 'a-z' | sed 's/nvidia //; s/[^a-z0-9]\+/-/g; s/-$//')
cs "$B/camserve" version > "$W/version.txt" 2>&1
cs ldd "$B/camserve" > "$W/ldd.txt" 2>&1
log "gpu: $gpu; $(cat "$W/version.txt")"

# 1. parity tests
log "test_cuda"
CS_GOLDEN_DIR=$root/tests/golden cs timeout 150 "$B/test_cuda" > "$W/test_cuda.txt" 2>&1
echo "exit $?" >> "$W/test_cuda.txt"
tail -3 "$W/test_cuda.txt" >&2

# 2. the model
log "export resnet50"
timeout 90 python3 "$here/peer_torch_gpu.py" --dir "$PEER" --export > "$W/export.txt" 2>&1
M=$PEER/resnet50.onnx
X=$PEER/input.npy

# 3. camserve
L4= L3=
if [ -f "$M" ]; then
    cs "$B/camserve" inspect --model "$M" --json > "$W/inspect.json" 2>"$W/inspect.err"
    read -r L4 L3 < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
names = [l["name"] for l in d["layers"]]
l3 = [n for n in names if "layer3" in n]
print(d["default_layer"], l3[-1] if l3 else d["default_layer"])' "$W/inspect.json" 2>/dev/null)
fi
cs_bench() { # NAME ARGS...
    local name=$1
    shift
    if [ ! -f "$M" ] || [ "$(left)" -lt 40 ]; then echo '{"error":"skipped"}' > "$W/cs_$name.json"; return; fi
    log "camserve $name"
    cs timeout 60 "$B/camserve" bench --model "$M" --tensor "$X" --device cuda "$@" --json \
        > "$W/cs_$name.json" 2> "$W/cs_$name.err" || echo "{\"error\": \"exit $?\"}" > "$W/cs_$name.json"
}
for p in fp16 fp32; do
    # CS_TRACE: plan sizes, and whether any CUDA Graph capture fell back to eager
    CS_TRACE=1 cs_bench "${p}_fwd_b1" --precision "$p" --iters 200 --warmup 20
    cs_bench "${p}_gradcam_l4" --precision "$p" --iters 100 --warmup 10 --method gradcam --layer "$L4"
    cs_bench "${p}_gradcam_l3" --precision "$p" --iters 100 --warmup 10 --method gradcam --layer "$L3"
    cs_bench "${p}_fwd_b64" --precision "$p" --batch 64 --iters 30 --warmup 5
done

# 4. PyTorch peers
if [ "$(left)" -gt 60 ]; then
    log "pytorch peers ($(left) s left)"
    timeout $(( $(left) - 15 )) python3 "$here/peer_torch_gpu.py" --dir "$PEER" --iters 50 > "$W/torch.json" 2> "$W/torch.err" \
        || echo "{\"error\": \"exit $? (timeout or failure, see torch.err)\"}" > "$W/torch.json"
else
    echo '{"error":"skipped: out of time"}' > "$W/torch.json"
fi

# 5. report
log "report"
rep=$OUT/gpu-$slug.md
python3 - "$W" "$gpu" "$rep" <<'PY'
import json, os, sys, glob, datetime
W, gpu, rep = sys.argv[1:4]
def load(n):
    try:
        return json.load(open(os.path.join(W, n)))
    except Exception as e:
        return {"error": f"no result ({type(e).__name__})"}
def ms(d, stage):
    try:
        return f'{d["stages"][stage]["median_ms"]:.3f}'
    except Exception:
        return d.get("error", "—") if isinstance(d, dict) else "—"
L = [f"# GPU benchmark (issue 8): {gpu}", "",
     f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by bench/gpu.sh.  {open(os.path.join(W, 'version.txt')).read().strip()}",
     "ResNet-50 with seeded random weights (bench/peer_torch_gpu.py), 224×224, median of the iterations.", "",
     "## camserve --device cuda", "",
     "| precision | forward b1 (ms) | GradCAM layer4 (ms) | GradCAM layer3 (ms) | forward b64 (ms) | b64 images/s |",
     "|---|---|---|---|---|---|"]
for p in ("fp16", "fp32"):
    b64 = load(f"cs_{p}_fwd_b64.json")
    try:
        ips = f'{64e3 / b64["stages"]["forward"]["median_ms"]:.0f}'
    except Exception:
        ips = "—"
    L.append(f"| {p} | {ms(load(f'cs_{p}_fwd_b1.json'), 'forward')} | {ms(load(f'cs_{p}_gradcam_l4.json'), 'explain')} "
             f"| {ms(load(f'cs_{p}_gradcam_l3.json'), 'explain')} | {ms(b64, 'forward')} | {ips} |")
t = load("torch.json")
def tm(k):
    v = t.get(k)
    return f'{v["median_ms"]:.3f}' if isinstance(v, dict) and "median_ms" in v else "—"
L += ["", f"## PyTorch peers, same run ({t.get('torch', '?')}, weights {t.get('weights', '?')})", "",
      "| peer | ms |", "|---|---|"]
for k, what in [("eager_fwd_b1", "eager autocast fp16 forward, b1"), ("eager_gradcam_l4", "eager hook GradCAM layer4 (frozen weights)"),
                ("eager_gradcam_l3", "eager hook GradCAM layer3"), ("compiled_fwd_b1", "torch.compile reduce-overhead forward, b1"),
                ("compiled_cam_fc_l4", "compiled forward + CAM from fc weights, layer4"),
                ("eager_fwd_b64", "eager autocast forward, b64"), ("compiled_fwd_b64", "compiled forward, b64")]:
    extra = ""
    v = t.get(k)
    if isinstance(v, dict) and "images_per_s" in v:
        extra = f' ({v["images_per_s"]:.0f} images/s)'
    L.append(f"| {what} | {tm(k)}{extra} |")
if "error" in t or "compile_error" in t:
    L.append(f"\nPyTorch: {t.get('error', '')} {t.get('compile_error', '')}")
tc = open(os.path.join(W, "test_cuda.txt")).read().strip().splitlines()
L += ["", "## test_cuda (parity with the CPU backend)", "", "```", *tc[-40:], "```"]
errs = []
for f in [os.path.join(W, "export.txt"), os.path.join(W, "torch.err")] + sorted(glob.glob(os.path.join(W, "cs_*.err"))):
    if not os.path.exists(f):
        continue
    s = open(f).read().strip()
    if s:
        errs.append(f"{os.path.basename(f)}: {s[-300:]}")
if errs:
    L += ["", "## stderr of the steps (tails)", "", "```", *errs, "```"]
open(rep, "w").write("\n".join(L) + "\n")
print(rep)
PY
cp "$W"/*.json "$W"/*.txt "$OUT/" 2>/dev/null
mkdir -p "$OUT/raw" && mv "$OUT"/cs_*.json "$OUT"/torch.json "$OUT"/inspect.json "$OUT"/*.txt "$OUT/raw/" 2>/dev/null
# a run that found no GPU is not a result worth keeping in the repository
if [ "$OUT" != "$here/results" ] && [ "$gpu" != "unknown GPU" ]; then cp "$rep" "$here/results/" 2>/dev/null; fi
log "done: $rep"
rm -rf "$W"
