#!/usr/bin/env bash
# camserve vs PyTorch vs ONNX Runtime, batch 1, 224 px, CPU.
#
#   bench/run.sh [CAMSERVE_BIN]
#
# env: ITERS (20), WARMUP (3), THREADS (threads camserve reports, else nproc),
#      MODELS ("resnet50 mobilenet_v2 efficientnet_b0 densenet121"),
#      GRADCAM=1 also times Grad-CAM (torch peer; camserve's "gradcam" stage if
#      it reports one), TORCH_JIT=1 times torch's forward as
#      jit.optimize_for_inference instead of eager,
#      PRECISION=bf16 runs camserve with --precision bf16 and torch under
#      torch.autocast("cpu", bfloat16) (ONNX Runtime has no bf16 CPU path:
#      its column stays fp32),
#      PY (/usr/bin/python3, needs torch), PEER_DIR (bench/.peer)
#
# Exports the models into bench/.peer/ (gitignored) on first use. camserve is
# run as: $CAMSERVE_BIN bench --model M.onnx --tensor input.npy --iters N
# --warmup W --json, and must print one JSON object with
# stages.forward.median_ms. A missing or failing binary just leaves its column
# empty: the peers are still measured.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-}"
ITERS="${ITERS:-20}"
WARMUP="${WARMUP:-3}"
MODELS="${MODELS:-resnet50 mobilenet_v2 efficientnet_b0 densenet121}"
PY="${PY:-/usr/bin/python3}"
PEER_DIR="${PEER_DIR:-$HERE/.peer}"
GRADCAM="${GRADCAM:-0}"
PRECISION="${PRECISION:-fp32}"
cs_prec=(--precision "$PRECISION")
pt_prec=()
[ "$PRECISION" = bf16 ] && pt_prec=(--bf16)
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT

die() { echo "run.sh: $*" >&2; exit 1; }
"$PY" -c 'import torch, torchvision, onnx' 2>/dev/null || die "$PY lacks torch/torchvision/onnx (use Debian's /usr/bin/python3)"

# json FILE EXPR: evaluate a python expression on the parsed JSON (last JSON line of FILE)
json() {
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
d = None
try:
    for line in open(sys.argv[1]):
        line = line.strip()
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except ValueError:
                pass
    v = eval(sys.argv[2], {}, {"d": d}) if d is not None else None
except Exception:
    v = None
print("" if v is None else v)
EOF
}

ratio() { "$PY" -c 'import sys
a, b = sys.argv[1], sys.argv[2]
print(f"{float(a)/float(b):.2f}" if a and b and float(b) > 0 else "")' "$1" "$2"; }

# 1. models + input
need=""
for m in $MODELS; do
  [ -f "$PEER_DIR/$m.onnx" ] && [ -f "$PEER_DIR/$m.pt" ] || need="$need,$m"
done
if [ -n "$need" ] || [ ! -f "$PEER_DIR/input.npy" ]; then
  echo "exporting models into $PEER_DIR ..." >&2
  "$PY" "$HERE/export_models.py" "$PEER_DIR" --models "$(echo $MODELS | tr ' ' ',')" || die "export failed"
fi
X="$PEER_DIR/input.npy"

have_bin=0
if [ -n "$BIN" ]; then
  if [ -x "$BIN" ] || command -v "$BIN" >/dev/null 2>&1; then have_bin=1; else echo "run.sh: $BIN is not executable; camserve column left empty" >&2; fi
fi
have_ort=0
if [ -d "$HERE/node_modules/onnxruntime-node" ] && command -v node >/dev/null 2>&1; then have_ort=1
else echo "run.sh: onnxruntime-node missing (cd bench && npm install --ignore-scripts); ort column left empty" >&2; fi

rows=()
gc_rows=()
T_USED=""
for m in $MODELS; do
  cs="" ; th="${THREADS:-}"; cs_gc=""
  if [ "$have_bin" = 1 ]; then
    cs_gc_flag=()
    [ "$GRADCAM" = 1 ] && cs_gc_flag=(--method gradcam)
    if "$BIN" bench --model "$PEER_DIR/$m.onnx" --tensor "$X" --iters "$ITERS" --warmup "$WARMUP" "${cs_gc_flag[@]}" "${cs_prec[@]}" --json \
        >"$LOG/cs_$m.json" 2>"$LOG/cs_$m.err"; then
      cs="$(json "$LOG/cs_$m.json" 'round(d["stages"]["forward"]["median_ms"], 2)')"
      # forward keeping the layer + backward to it + map: what torch's gradcam stage times
      cs_gc="$(json "$LOG/cs_$m.json" 'round(d["stages"]["explain"]["median_ms"], 2)')"
      [ -z "$th" ] && th="$(json "$LOG/cs_$m.json" 'd.get("threads")')"
    else
      echo "run.sh: camserve bench failed for $m: $(tail -c 300 "$LOG/cs_$m.err")" >&2
    fi
  fi
  [ -z "$th" ] && th="$(nproc)"
  T_USED="$th"
  gc_flag=()
  [ "$GRADCAM" = 1 ] && gc_flag=(--gradcam)
  [ "${TORCH_JIT:-0}" = 1 ] && gc_flag+=(--jit)
  "$PY" "$HERE/peer_torch.py" "$m" --iters "$ITERS" --warmup "$WARMUP" --threads "$th" \
      --dir "$PEER_DIR" "${gc_flag[@]}" "${pt_prec[@]}" >"$LOG/pt_$m.json" 2>"$LOG/pt_$m.err" \
      || echo "run.sh: torch peer failed for $m: $(tail -c 300 "$LOG/pt_$m.err")" >&2
  pt="$(json "$LOG/pt_$m.json" 'd["stages"]["forward"]["median_ms"]')"
  pt_gc="$(json "$LOG/pt_$m.json" 'd["stages"]["gradcam"]["median_ms"]')"
  ort=""
  if [ "$have_ort" = 1 ]; then
    node "$HERE/peer_ort.js" "$PEER_DIR/$m.onnx" --iters "$ITERS" --warmup "$WARMUP" --threads "$th" \
        --input "$X" >"$LOG/ort_$m.json" 2>"$LOG/ort_$m.err" \
        || echo "run.sh: ORT peer failed for $m: $(tail -c 300 "$LOG/ort_$m.err")" >&2
    ort="$(json "$LOG/ort_$m.json" 'd["stages"]["forward"]["median_ms"]')"
  fi
  rows+=("| $m | ${cs:--} | ${pt:--} | ${ort:--} | $(ratio "$pt" "$cs") | $(ratio "$ort" "$cs") |")
  gc_rows+=("| $m | ${cs_gc:--} | ${pt_gc:--} | $(ratio "$pt_gc" "$cs_gc") |")
done

echo
echo "Forward, batch 1, 224 px, median of $ITERS (warmup $WARMUP), $T_USED thread(s), camserve and torch in $PRECISION, ort in fp32, $(date -u +%Y-%m-%d)"
echo
echo "| model | camserve ms | torch ms | ort ms | torch/camserve | ort/camserve |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
if [ "$GRADCAM" = 1 ]; then
  echo
  echo "Grad-CAM (forward + backward to the layer + map), median ms"
  echo
  echo "| model | camserve ms | torch ms | torch/camserve |"
  echo "|---|---:|---:|---:|"
  printf '%s\n' "${gc_rows[@]}"
fi

# 2. GEMM roofline: how long resnet50's conv/gemm FLOPs take at camserve's GEMM rate
if [ "$have_bin" = 1 ] && "$BIN" bench-gemm --json >"$LOG/gemm.json" 2>/dev/null; then
  gf="$(json "$LOG/gemm.json" 'd["gflops"]')"
  if [ -n "$gf" ] && [ -f "$PEER_DIR/resnet50.onnx" ]; then
    fl="$("$PY" "$HERE/export_models.py" "$PEER_DIR" --flops resnet50)"
    "$PY" -c 'import sys
fl, gf = float(sys.argv[1]), float(sys.argv[2])
print(f"\nresnet50: {fl/1e9:.2f} GFLOP (conv+gemm, batch 1); at camserve bench-gemm {gf:.1f} GFLOP/s that is {fl/gf/1e6:.2f} ms")' "$fl" "$gf"
  fi
fi
