#!/usr/bin/env bash
# --device / --precision on a machine without a usable GPU (the CPU CI):
# asking for CUDA fails with one clear line, never a crash or a silent CPU
# run; auto falls back to the CPU.  On a machine with a GPU the CUDA checks
# are test_cuda's (label gpu); this script then only checks the flags' parsing
# and exits 77 (skipped) for the rest.
#
#   bash tests/cli/cuda_device.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
model=$src/tests/golden/resnet_basic/model.onnx
x=$src/tests/golden/resnet_basic/input.npy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/cli/lib/check.bash" # fail, ok, run NAME WANT_RC CMD...
unset CAMSERVE_DEVICE CAMSERVE_PRECISION
has() { grep -q -- "$2" "$tmp/err" || fail "$1: stderr lacks '$2': $(head -c 600 "$tmp/err")"; }

run "bad device" 1 "$bin" classify --model "$model" --tensor "$x" --device tpu && has "bad device" "device must be cpu, cuda, cuda:N or auto"
run "bad precision" 1 "$bin" classify --model "$model" --tensor "$x" --device cpu --precision fp8 && has "bad precision" "precision must be fp32, fp16 or bf16"
run "cpu + fp16" 1 "$bin" classify --model "$model" --tensor "$x" --device cpu --precision fp16 && has "cpu + fp16" "needs a GPU device"
run "cpu + fp32" 0 "$bin" classify --model "$model" --tensor "$x" --device cpu --precision fp32
# bf16 on the CPU: computed where oneDNN has native bf16, else refused with
# the reason (oneDNN held below bf16 to check the refusal on any machine)
run "cpu + bf16, no native bf16" 1 env ONEDNN_MAX_CPU_ISA=AVX512_CORE "$bin" classify --model "$model" --tensor "$x" --device cpu --precision bf16 &&
    has "cpu + bf16, no native bf16" "needs AVX512_BF16 or AMX"
run "version, no native bf16" 0 env ONEDNN_MAX_CPU_ISA=AVX512_CORE "$bin" version &&
    { grep -q '^cpu: oneDNN .* on avx512_core, bf16 not native' "$tmp/out" || fail "version does not say bf16 is not native: $(cat "$tmp/out")"; }
if grep -qw avx512_bf16 /proc/cpuinfo || grep -qw amx_bf16 /proc/cpuinfo; then
    run "version" 0 "$bin" version
    grep -q '^cpu: oneDNN .*, bf16 native' "$tmp/out" || fail "version does not say bf16 is native: $(cat "$tmp/out")"
    run "cpu + bf16" 0 "$bin" inspect --model "$model" --json --device cpu --precision bf16
    grep -q '"precision": *"bf16"' "$tmp/out" || fail "inspect --precision bf16 does not report bf16: $(head -c 300 "$tmp/out")"
    run "explain cpu + bf16" 0 "$bin" explain --model "$model" --tensor "$x" --device cpu --precision bf16 --json
else
    echo "no native bf16 on this CPU: only the refusal is checked"
fi
run "serve --gpu-decode maybe" 2 "$bin" serve --model "$model" --gpu-decode maybe && has "serve --gpu-decode maybe" "--gpu-decode must be on or off"
run "CAMSERVE_GPU_DECODE=x" 2 env CAMSERVE_GPU_DECODE=x "$bin" serve --model "$model" && has "CAMSERVE_GPU_DECODE=x" "--gpu-decode must be on or off"
run "inspect device" 0 "$bin" inspect --model "$model" --json --device cpu
grep -q '"device": *"cpu"' "$tmp/out" || fail "inspect --json does not report the device: $(head -c 300 "$tmp/out")"

if ! "$bin" version | grep -q "built without CUDA"; then
    run "inspect auto" 0 "$bin" inspect --model "$model" --json --device auto
    if grep -q '"device": *"cuda' "$tmp/out"; then
        echo "a GPU is usable here: the CUDA checks are test_cuda's (ctest -L gpu)"
        [ "$fails" -eq 0 ] && exit 77
        exit 1
    fi
fi

# no GPU (or no CUDA in this build): every command refuses cuda with the reason
for cmd in classify explain bench; do
    extra=""
    [ "$cmd" = bench ] && extra="--iters 1 --json"
    run "$cmd --device cuda" 1 "$bin" $cmd --model "$model" --tensor "$x" --device cuda $extra
    if "$bin" version | grep -q "built without CUDA"; then
        has "$cmd --device cuda" "camserve was built without CUDA support"
    else
        has "$cmd --device cuda" "no usable GPU"
    fi
    grep -qE 'AddressSanitizer|runtime error|Segmentation' "$tmp/err" && fail "$cmd: crash"
done
run "cuda:3" 1 "$bin" classify --model "$model" --tensor "$x" --device cuda:3
run "CAMSERVE_DEVICE=cuda" 1 env CAMSERVE_DEVICE=cuda "$bin" classify --model "$model" --tensor "$x"
run "auto falls back to cpu" 0 "$bin" classify --model "$model" --tensor "$x" --device auto --json
run "serve --device cuda" 1 timeout 20 "$bin" serve --model "$model" --port 0 --device cuda
has "serve --device cuda" "CUDA"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
