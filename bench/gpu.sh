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
#   bash bench/gpu.sh                        # <= 6 minutes (GPU_PLAN=300 s of steps)
#
# Steps, each under its own timeout so the whole stays inside the budget:
#   1. the GPU parity tests (test_cuda: every golden family + the default
#      model, fp32/fp16/bf16 against the CPU backend, GradCAM, graph replay;
#      every figure printed, not only the first failure), then again with
#      CS_CUDA_FUSE=0 (the unfused convolution path);
#   2. ResNet-50 (seeded random weights) exported by bench/peer_torch_gpu.py;
#   3. camserve bench on cuda: batch-1 forward, GradCAM at layer4 and at
#      layer3 (stage gradcam_map: forward + backward + map, the peers' scope),
#      batch-64 throughput; fp16 and fp32; then variants (no fusion, timed
#      cuDNN algorithms, one staging thread) and a per-step profile of
#      batch 64 (CS_CUDA_PROFILE); the same ResNet-50 on this machine's CPU
#      in fp32 and bf16;
#   4. end to end in the server: the 4000x3000 photo, new bytes per request
#      (bench/gpu_e2e.py), with the GPU image path (nvJPEG + resize kernels,
#      the default), with --encode-threads 1 (overlay + PNG on one core) and
#      with --gpu-decode off, and for the photo tagged EXIF orientation 6;
#      camserve explain over a folder of 8 photos on
#      cuda and on the CPU;
#   5. the PyTorch peers in the same run (eager autocast, hook GradCAM,
#      host-to-host batch 64, torch.compile with CUDA graphs) and
#      torch.autocast's own fp16/bf16 error on the golden families
#      (bench/peer_torch_precision.py);
#   6. a markdown report naming the GPU: $OUT/gpu-<gpu>.md and the raw
#      outputs as $OUT/gpu-raw.tar.gz (a device run returns 8 files at most);
#      the report is also copied to bench/results/.
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
PLAN=${GPU_PLAN:-300}  # seconds for steps 1-5; the report follows
left() { echo $(( PLAN - ($(date +%s) - t0) )); }

. "$here/gpu_env.sh"
cs "$B/camserve" version > "$W/version.txt" 2>&1
cs ldd "$B/camserve" > "$W/ldd.txt" 2>&1
log "gpu: $gpu; $(cat "$W/version.txt")"

# 1. parity tests
log "test_cuda"
CS_GOLDEN_DIR=$root/tests/golden CS_IMAGES_DIR=$root/tests/data/images cs timeout 150 "$B/test_cuda" > "$W/test_cuda.txt" 2>&1
echo "exit $?" >> "$W/test_cuda.txt"
tail -3 "$W/test_cuda.txt" >&2
# the same without cuDNN's fused convolutions (the unfused path is the fallback)
CS_CUDA_FUSE=0 CS_GOLDEN_DIR=$root/tests/golden CS_IMAGES_DIR=$root/tests/data/images cs timeout 60 "$B/test_cuda" > "$W/test_cuda_nofuse.txt" 2>&1
echo "exit $?" >> "$W/test_cuda_nofuse.txt"

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

# 3b. where batch 64's time goes (eager, per step: CS_CUDA_PROFILE), and
# the same forward with cuDNN's heuristics instead of timed algorithms
if [ -f "$M" ] && [ "$(left)" -gt 60 ]; then
    log "profile b64"
    CS_CUDA_PROFILE=1 cs timeout 60 "$B/camserve" bench --model "$M" --tensor "$X" --device cuda --precision fp16 \
        --batch 64 --iters 1 --warmup 1 --json > /dev/null 2> "$W/profile_b64.txt"
    CS_CUDNN_FIND=1 cs_bench fp16_fwd_b64_find --precision fp16 --batch 64 --iters 30 --warmup 5
    OMP_NUM_THREADS=1 cs_bench fp16_fwd_b64_1thread --precision fp16 --batch 64 --iters 30 --warmup 5
    CS_CUDA_FUSE=0 cs_bench fp16_fwd_b64_nofuse --precision fp16 --batch 64 --iters 30 --warmup 5
    CS_CUDA_FUSE=0 cs_bench fp16_gradcam_l4_nofuse --precision fp16 --iters 100 --warmup 10 --method gradcam --layer "$L4"
    # the per-channel methods: AblationCAM's pruned tail runs, ScoreCAM's whole forwards
    cs_bench fp16_ablationcam --precision fp16 --iters 3 --warmup 1 --method ablationcam
    cs_bench fp16_scorecam --precision fp16 --iters 3 --warmup 1 --method scorecam
fi

# 3c. this machine's CPU, fp32 and bf16 (--device cpu): the GPU machines'
# server CPUs may have AMX, which oneDNN uses for bf16 by itself
if [ -f "$M" ] && [ "$(left)" -gt 50 ]; then
    for p in fp32 bf16; do
        log "camserve cpu $p"
        cs timeout 30 "$B/camserve" bench --model "$M" --tensor "$X" --device cpu --precision "$p" --iters 20 --warmup 3 \
            --json > "$W/cs_cpu_$p.json" 2> "$W/cs_cpu_$p.err" || echo "{\"error\": \"exit $?\"}" > "$W/cs_cpu_$p.json"
    done
fi

# 4. end to end in the server: the 4000x3000 photo -> predictions + overlay
# PNG (ResNet-50, GradCAM at the default layer, fp16), new bytes each time;
# with the GPU image path and the overlay + PNG split over the cores (the
# defaults, e2e.json), without the split (e2e_enc1.json) and without the
# GPU image path (e2e_cpu.json); and the photo tagged EXIF orientation 6
# (e2e_rot6.json)
e2e_port=18930
e2e() { # $1: result name, then serve's extra arguments
    local name=$1 port=$((++e2e_port))
    shift
    rm -rf "$W/cache"
    # not through cs(): a backgrounded function is a subshell, so $! would
    # be that shell and the TERM below would leave the server running (and
    # answering the next configuration's requests from its cache)
    env LD_LIBRARY_PATH="$CSLD" "$B/camserve" serve --model "$M:resnet50" --device cuda --port $port \
        --cache-dir "$W/cache" "$@" > "$W/serve_$name.txt" 2>&1 &
    local spid=$!
    for _ in $(seq 100); do
        kill -0 $spid 2>/dev/null || break
        grep -qE "no usable|cannot|error" "$W/serve_$name.txt" && break
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
        sleep 0.3
    done
    timeout 60 python3 "$here/gpu_e2e.py" --port $port --photo "$B/photo.jpg" --n 30 --warmup 5 ${E2E_CLIENT:-} \
        > "$W/$name.json" 2> "$W/$name.err" || echo "{\"error\": \"exit $?\"}" >> "$W/$name.err"
    python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=2).read().decode())" 2>/dev/null \
        | grep '^camserve_gpu_decode_total' > "$W/${name}_metrics.txt"
    grep -m1 'ready (' "$W/serve_$name.txt" > "$W/${name}_ready.txt" 2>/dev/null
    kill -TERM $spid 2>/dev/null
    wait $spid 2>/dev/null
}
if [ -f "$M" ] && [ -f "$B/photo.jpg" ] && [ "$(left)" -gt 60 ]; then
    log "server end to end"
    e2e e2e
    e2e e2e_enc1 --encode-threads 1
    e2e e2e_cpu --gpu-decode off
    E2E_CLIENT="--orientation 6" e2e e2e_rot6
fi

# 4b. the CLI over a folder (8 copies of the photo): explain --out on cuda
# (large JPEGs through the GPU image path, cli_pool) and on this machine's
# CPU; wall time, each image's decode time, top-1 agreement
cli_folder() { # $1: device
    local d=$1
    rm -rf "$W/cli_out_$d"
    local a=$(date +%s%N)
    cs timeout 60 "$B/camserve" explain --model "$M" --device "$d" --image "$W/folder" --out "$W/cli_out_$d" --json \
        > "$W/cli_$d.jsonl" 2> "$W/cli_$d.err"
    echo "{\"rc\": $?, \"wall_ms\": $(( ($(date +%s%N) - a) / 1000000 ))}" > "$W/cli_$d.json"
}
if [ -f "$M" ] && [ -f "$B/photo.jpg" ] && [ "$(left)" -gt 60 ]; then
    log "CLI over a folder"
    mkdir -p "$W/folder"
    for i in 1 2 3 4 5 6 7 8; do cp "$B/photo.jpg" "$W/folder/p$i.jpg"; done
    cli_folder cuda
    cli_folder cpu
fi

# 5. PyTorch peers: eager first (its numbers must not wait on compiling)
if [ "$(left)" -gt 40 ]; then
    log "pytorch eager ($(left) s left)"
    timeout 60 python3 "$here/peer_torch_gpu.py" --dir "$PEER" --iters 50 --what eager > "$W/torch_eager.json" 2> "$W/torch_eager.err" \
        || echo "{\"error\": \"eager: exit $?\"}" > "$W/torch_eager.json"
fi
if [ "$(left)" -gt 50 ]; then
    log "pytorch autocast precision on the golden families"
    timeout 60 python3 "$here/peer_torch_precision.py" > "$W/torch_precision.json" 2> "$W/torch_precision.err" \
        || echo "{\"error\": \"exit $?\"}" > "$W/torch_precision.json"
fi
if [ "$(left)" -gt 60 ]; then
    log "pytorch compiled ($(left) s left)"
    timeout $(( $(left) - 10 )) python3 "$here/peer_torch_gpu.py" --dir "$PEER" --iters 50 --what compile > "$W/torch_compile.json" 2> "$W/torch_compile.err" \
        || echo "{\"error\": \"compile: exit $? (timeout or failure, see torch_compile.err)\"}" > "$W/torch_compile.json"
else
    echo '{"error":"compile skipped: out of time"}' > "$W/torch_compile.json"
fi

# 6. report
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
     f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by bench/gpu.sh.  {open(os.path.join(W, 'version.txt')).read().strip()}",
     "ResNet-50 with seeded random weights (bench/peer_torch_gpu.py), 224×224, median of the iterations.", "",
     "## camserve --device cuda", "",
     "GradCAM = forward + backward + the min-max scaled map at the layer's resolution, top-1 class (the peers' scope; "
     "stage gradcam_map of camserve bench); explain = the whole explain pipeline of the CLI/server, which adds the map "
     "upsampled to the input size on the host.  Batch 64: from a host buffer to host logits, as camserve's API runs; "
     "on the device: CUDA events around the forward's graph, the input already on the GPU (stage forward_device, the "
     "scope of a peer whose input is on the GPU).", "",
     "| precision | forward b1 (ms) | GradCAM layer4 (ms) | GradCAM layer3 (ms) | explain layer4 (ms) | forward b64 (ms) | b64 images/s | b64 on the device (ms) | images/s |",
     "|---|---|---|---|---|---|---|---|---|"]
for p in ("fp16", "fp32"):
    b64 = load(f"cs_{p}_fwd_b64.json")
    try:
        ips = f'{64e3 / b64["stages"]["forward"]["median_ms"]:.0f}'
    except Exception:
        ips = "—"
    try:
        dips = f'{64e3 / b64["stages"]["forward_device"]["median_ms"]:.0f}'
    except Exception:
        dips = "—"
    l4, l3 = load(f'cs_{p}_gradcam_l4.json'), load(f'cs_{p}_gradcam_l3.json')
    L.append(f"| {p} | {ms(load(f'cs_{p}_fwd_b1.json'), 'forward')} | {ms(l4, 'gradcam_map')} | {ms(l3, 'gradcam_map')} "
             f"| {ms(l4, 'explain')} | {ms(b64, 'forward')} | {ips} | {ms(b64, 'forward_device')} | {dips} |")
L += ["", "Variants, same run:", ""]
for name, stage, what in (("fwd_b64_nofuse", "forward", "batch 64 without cuDNN's fused convolutions (CS_CUDA_FUSE=0)"),
                          ("fwd_b64_find", "forward", "batch 64 with timed cuDNN algorithms (CS_CUDNN_FIND=1) instead of the heuristics"),
                          ("fwd_b64_1thread", "forward", "batch 64 with the input staged by one thread (OMP_NUM_THREADS=1)"),
                          ("gradcam_l4_nofuse", "gradcam_map", "GradCAM layer4 without fused convolutions (CS_CUDA_FUSE=0)"),
                          ("ablationcam", "explain", "AblationCAM at layer4 (forward + 2048 ablated runs of the network's tail + map)"),
                          ("scorecam", "explain", "ScoreCAM at layer4 (forward + 2048 masked forwards in batches of 16 + map)")):
    h = load(f"cs_fp16_{name}.json")
    try:
        v = h['stages'][stage]['median_ms']
        ips = f" ({64e3 / v:.0f} images/s)" if "b64" in name else ""
        L.append(f"- fp16 {what}: {v:.3f} ms{ips}")
    except Exception:
        L.append(f"- fp16 {what}: {h.get('error', 'no result')}")
for p in ("fp16", "fp32"):
    try:
        fl = [l.strip() for l in open(os.path.join(W, f"cs_{p}_fwd_b1.err")) if "fused by cuDNN" in l]
        if fl:
            L.append(f"- {p} plan (CS_TRACE): {fl[0]}")
    except Exception:
        pass
try:
    prof = [l for l in open(os.path.join(W, "profile_b64.txt")).read().splitlines() if l.startswith(("cuda profile", "  "))]
    last = max(i for i, l in enumerate(prof) if l.startswith("cuda profile"))
    L += ["", "Where fp16 batch 64's forward goes on the GPU (CS_CUDA_PROFILE=1: the third run, eager, CUDA events "
          "around each step, so launch gaps count too; the input copy is not in it):", "", "```", *prof[last:last + 13], "```"]
except Exception:
    pass
cpu = [l for l in open(os.path.join(W, "version.txt")).read().splitlines() if l.startswith("cpu:")]
L += ["", f"This machine's CPU, camserve --device cpu, batch 1, {load('cs_cpu_fp32.json').get('threads', '?')} threads "
      f"({cpu[0] if cpu else 'cpu: ?'}): forward fp32 {ms(load('cs_cpu_fp32.json'), 'forward')} ms, "
      f"bf16 {ms(load('cs_cpu_bf16.json'), 'forward')} ms."]
t = load("torch_eager.json")
for k, v in load("torch_compile.json").items():
    t.setdefault(k, v) if k != "error" else t.__setitem__("error", (t.get("error", "") + " " + str(v)).strip())
def tm(k):
    v = t.get(k)
    return f'{v["median_ms"]:.3f}' if isinstance(v, dict) and "median_ms" in v else "—"
L += ["", f"## PyTorch peers, same run ({t.get('torch', '?')}, weights {t.get('weights', '?')})", "",
      "| peer | ms |", "|---|---|"]
for k, what in [("eager_fwd_b1", "eager autocast fp16 forward, b1"), ("eager_gradcam_l4", "eager hook GradCAM layer4 (frozen weights)"),
                ("eager_gradcam_l3", "eager hook GradCAM layer3"), ("compiled_fwd_b1", "torch.compile reduce-overhead forward, b1"),
                ("compiled_cam_fc_l4", "compiled forward + CAM from fc weights, layer4"),
                ("eager_fwd_b64", "eager autocast forward, b64, input on the GPU"),
                ("eager_fwd_b64_host", "eager autocast forward, b64, host tensor → host logits"),
                ("eager_fwd_b64_pinned", "eager autocast forward, b64, pinned host tensor → host logits"),
                ("compiled_fwd_b64", "compiled forward, b64, input on the GPU"),
                ("compiled_fwd_b64_host", "compiled forward, b64, host tensor → host logits")]:
    extra = ""
    v = t.get(k)
    if isinstance(v, dict) and "images_per_s" in v:
        extra = f' ({v["images_per_s"]:.0f} images/s)'
    L.append(f"| {what} | {tm(k)}{extra} |")
if "error" in t or "compile_error" in t:
    L.append(f"\nPyTorch: {t.get('error', '')} {t.get('compile_error', '')}")
L += ["", "## End to end in the server (camserve serve --device cuda, fp16, ResNet-50, GradCAM)", ""]
for name, title in (("e2e", "JPEG decoded and preprocessed on the GPU (the default; nvJPEG: "
                     + (os.environ.get("CS_NVJPEG_LIB") or "not found") + "); overlay + PNG split over "
                     "the cores (the default)"),
                    ("e2e_enc1", "as above with --encode-threads 1: overlay + PNG on one core"),
                    ("e2e_cpu", "--gpu-decode off: JPEG decoded and preprocessed on the CPU"),
                    ("e2e_rot6", "as the default, the photo tagged EXIF orientation 6 (a portrait phone photo: "
                     "the GPU resize reads the frame on its side)")):
    e = load(name + ".json")
    L += [f"### {title}", ""]
    if "client_ms" in e:
        L += [f"4000×3000 JPEG ({e['photo_bytes']} bytes), a new image each request (cache {e['cache']}), {e['n']} requests "
              f"after 5 warm-ups, one kept-alive connection; errors: {e['error_count']}.", "",
              "| | median ms | p90 ms |", "|---|---|---|",
              f"| client wall (upload → JSON with predictions + overlay PNG) | {e['client_ms']['median']:.2f} | {e['client_ms']['p90']:.2f} |"]
        for k, v in e.get("server_ms", {}).items():
            L.append(f"| server {k} | {v['median']:.2f} | {v['p90']:.2f} |")
    else:
        L.append(f"no result: {e.get('error', e)}")
    try:
        ready = open(os.path.join(W, name + "_ready.txt")).read().strip()
        if ready:
            L += ["", f"Server: `{ready}`"]
    except Exception:
        pass
    try:
        met = open(os.path.join(W, name + "_metrics.txt")).read().strip()
        L += ["", "Which path prepared the images (/metrics):", "", "```", met or "(no camserve_gpu_decode_total)", "```", ""]
    except Exception:
        pass
L += ["", "## The CLI over a folder (camserve explain --out, 8 copies of the photo, ResNet-50, default precision)", "",
      "| device | exit | wall ms (start, load, 8 photos) | decode ms per image (median) | top-1 |", "|---|---|---|---|---|"]
tops = {}
for d in ("cuda", "cpu"):
    r = load(f"cli_{d}.json")
    try:
        rows = [json.loads(l) for l in open(os.path.join(W, f"cli_{d}.jsonl"))]
    except Exception:
        rows = []
    dec = sorted(x["timings_ms"]["decode"] for x in rows if "timings_ms" in x)
    tops[d] = [x["predictions"][0]["index"] for x in rows if "predictions" in x]
    med = f"{dec[len(dec) // 2]:.2f}" if dec else "—"
    L.append(f"| {d} | {r.get('rc', r.get('error'))} | {r.get('wall_ms', '—')} | {med} | {tops[d][0] if tops[d] else '—'} |")
if tops.get("cuda") and tops.get("cpu"):
    L += ["", f"Same top-1 on {sum(a == b for a, b in zip(tops['cuda'], tops['cpu']))} of {len(tops['cpu'])} images."]
tc = open(os.path.join(W, "test_cuda.txt")).read().strip().splitlines()
# precision: camserve (test_cuda's summary lines) next to torch.autocast on the same families
ours = {}
for l in tc:
    f = l.split()
    if len(f) > 6 and f[1] in ("fp16", "bf16") and f[2] == "logits":
        ours[(f[0], f[1])] = (f[3], f[5])
tp = load("torch_precision.json")
L += ["", "## Half precision against fp32: camserve (test_cuda) and torch.autocast (bench/peer_torch_precision.py)", "",
      "Max |logit − fp32 logit| / max |fp32 logit| and top-1 agreement, golden families (tools/make_golden.py's "
      "architectures and seeded weights, rebuilt by this machine's PyTorch for the peer); the issue's bar is 2e-2 "
      "and the same top-1.", "",
      "| family | camserve fp16 | torch fp16 | camserve bf16 | torch bf16 |", "|---|---|---|---|---|"]
for fam in sorted({k[0] for k in ours} | set(tp.get("families", {}))):
    row = [fam]
    for prec in ("fp16", "bf16"):
        o = ours.get((fam, prec))
        row.append(f"{float(o[0]):.4f} ({o[1]})" if o else "—")
        t_ = tp.get("families", {}).get(fam, {}).get(prec)
        row.append(f"{t_['rel_err']:.4f} ({t_['top1']}/{t_['batch']})" if t_ else "—")
    L.append("| " + " | ".join(row) + " |")
if "error" in tp:
    L.append(f"\ntorch precision: {tp['error']}")
L += ["", "## test_cuda (parity with the CPU backend)", "", "```", *tc[-160:], "```"]
try:
    nf = open(os.path.join(W, "test_cuda_nofuse.txt")).read().strip().splitlines()
    L += ["", "test_cuda again with CS_CUDA_FUSE=0 (failed checks and the end):", "", "```",
          *[l for l in nf if "FAIL " in l], *nf[-2:], "```"]
except Exception:
    pass
errs = []
for f in [os.path.join(W, n) for n in ("export.txt", "torch_eager.err", "torch_compile.err", "torch_precision.err", "e2e.err", "e2e_cpu.err", "serve_e2e.txt", "cli_cuda.err")] + sorted(glob.glob(os.path.join(W, "cs_*.err"))):
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
# the raw outputs as one file (a device run returns at most 8)
tar -czf "$OUT/gpu-raw.tar.gz" -C "$W" --exclude=peer --exclude=cache --exclude='cli_out_*' --exclude=folder . 2>/dev/null
# a run that found no GPU is not a result worth keeping in the repository
if [ "$OUT" != "$here/results" ] && [ "$gpu" != "unknown GPU" ]; then cp "$rep" "$here/results/" 2>/dev/null; fi
log "done: $rep"
rm -rf "$W"
