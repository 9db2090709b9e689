#!/usr/bin/env bash
# Where the GPU image path's time goes (issue 8's 4000x3000 JPEG end to
# end): a short device run after bench/gpu.sh, on the same bundle
# (bench/gpu_bundle.sh; carry bench/.gpu_bundle.tar.xz), ~1 minute:
#
#   bash bench/gpu_prep.sh                  # -> $OUT/gpu-prep-<gpu>.txt
#
#   0. test_cuda, when the bundle has it (its gpuprep case checks each
#      decoder against the CPU path);
#   1. camserve explain --device cuda over 8 copies of the photo with
#      CS_GPUPREP_PROFILE=1 (one line per image: host parse, plans, the
#      decode call, the wait; on the device decode, resize, download),
#      with the hardware decoder and with CS_NVJPEG_BACKEND=gpu_hybrid;
#   2. the server end to end (the embedded default model, GradCAM), one
#      client, with each decoder, the profile lines of its log alongside;
#   3. the same server with 4 and 8 clients at once: throughput, not
#      latency; then 8 clients with --prep-threads 4 and 8 (the pool that
#      decodes, each thread with its own nvJPEG decoder and stream).
# The default model keeps the run short (no export): the decode does not
# depend on the model, the inference and CAM times do (see bench/gpu.sh).
set -u
t0=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
B=${GPU_BUNDLE:-$here/.gpu_bundle}
OUT=${OUT:-/tmp}
W=$(mktemp -d)
DEV=${GPU_PREP_DEVICE:-cuda} # cpu: a dry run of this script where there is no GPU
log() { echo "[gpu_prep.sh $(( $(date +%s) - t0 ))s] $*" >&2; }
. "$here/gpu_env.sh"
R=$OUT/gpu-prep-$slug.txt
{
    echo "# bench/gpu_prep.sh, $(date -u '+%Y-%m-%d %H:%M') UTC: $gpu"
    cs "$B/camserve" version
    echo "nvJPEG: ${CS_NVJPEG_LIB:-not found}"
} > "$R" 2>&1
if [ -x "$B/test_cuda" ] && [ "$DEV" = cuda ]; then
    log "test_cuda"
    root=$(cd "$here/.." && pwd)
    CS_GOLDEN_DIR=$root/tests/golden CS_IMAGES_DIR=$root/tests/data/images cs timeout 90 "$B/test_cuda" > "$W/test_cuda.txt" 2>&1
    echo "exit $?" >> "$W/test_cuda.txt"
    { echo -e "\n## test_cuda: the gpuprep lines and the end"; grep -E "gpuprep|FAILED|PASSED|^exit" "$W/test_cuda.txt"; } >> "$R"
fi
mkdir -p "$W/folder"
for i in 1 2 3 4 5 6 7 8; do cp "$B/photo.jpg" "$W/folder/p$i.jpg"; done

for be in hardware gpu_hybrid; do
    log "CLI, $be"
    echo -e "\n## camserve explain --device $DEV --image FOLDER (8 photos), CS_NVJPEG_BACKEND=$be" >> "$R"
    CS_NVJPEG_BACKEND=$be CS_GPUPREP_PROFILE=1 cs timeout 60 "$B/camserve" explain --device $DEV --image "$W/folder" \
        --out "$W/out_$be" --json > "$W/cli_$be.jsonl" 2> "$W/cli_$be.err"
    echo "exit $?" >> "$R"
    grep -E "gpuprep profile|error|cannot" "$W/cli_$be.err" >> "$R"
    python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("decode ms per image (timings_ms.decode):", " ".join("%.2f" % r["timings_ms"]["decode"] for r in rows if "timings_ms" in r))' \
        "$W/cli_$be.jsonl" >> "$R" 2>&1
done

port=18960
serve() { # $1: backend, then serve's extra arguments; the server's pid in spid, its log in $W/serve_$1.txt
    local be=$1
    shift
    port=$((port + 1))
    rm -rf "$W/cache"
    # env directly, not cs(): $! must be the server (see bench/gpu.sh)
    CS_NVJPEG_BACKEND=$be CS_GPUPREP_PROFILE=1 env LD_LIBRARY_PATH="$CSLD" "$B/camserve" serve --device $DEV \
        --port $port --cache-dir "$W/cache" "$@" > "$W/serve_$be.txt" 2>&1 &
    spid=$!
    for _ in $(seq 100); do
        kill -0 $spid 2>/dev/null || break
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
        sleep 0.3
    done
}
clients() { # $1: how many clients at once, $2: what serves them (for the report); 20 new images each
    local k=$1
    log "$2, $k clients"
    echo -e "\n## $2, $k clients at once, 20 requests each (new images), no warm-up" >> "$R"
    a=$(date +%s%N)
    pids=
    for c in $(seq $k); do
        timeout 90 python3 "$here/gpu_e2e.py" --port $port --photo "$B/photo.jpg" --n 20 --warmup 0 --client $((c + 10 * k)) \
            > "$W/conc_${k}_$c.json" 2>&1 &
        pids="$pids $!"
    done
    wait $pids # not the server's
    ms=$(( ($(date +%s%N) - a) / 1000000 ))
    python3 - "$W" "$k" "$ms" >> "$R" 2>&1 <<'PY'
import json, sys, statistics
W, k, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rs = [json.load(open(f"{W}/conc_{k}_{c}.json")) for c in range(1, k + 1)]
n = sum(r["n"] for r in rs)
med = statistics.median([r["client_ms"]["median"] for r in rs if "client_ms" in r])
print(f"{n} answers in {ms} ms: {n / ms * 1e3:.1f} images/s; median of the clients' median latency {med:.1f} ms; "
      f"errors {sum(r['error_count'] for r in rs)}; cache {[r['cache'] for r in rs]}")
for key in ("queue", "decode", "inference", "cam", "encode", "total"):
    print(f"  server {key}: median of medians {statistics.median([r['server_ms'][key]['median'] for r in rs]):.2f} ms")
PY
}
for be in hardware gpu_hybrid; do
    log "server, $be"
    serve $be
    echo -e "\n## the server, default model, GradCAM, CS_NVJPEG_BACKEND=$be: one client, 30 requests after 5 warm-ups" >> "$R"
    timeout 60 python3 "$here/gpu_e2e.py" --port $port --photo "$B/photo.jpg" --n 30 --warmup 5 >> "$R" 2>&1
    echo "profile lines of the server's log (the last 5 of $(grep -c 'gpuprep profile' "$W/serve_$be.txt")):" >> "$R"
    grep "gpuprep profile" "$W/serve_$be.txt" | tail -5 >> "$R"
    if [ $be = hardware ]; then
        for k in 4 8; do
            clients $k "the same server"
        done
        python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=2).read().decode())" 2>/dev/null \
            | grep -E '^camserve_gpu_decode_total|^camserve_stage_seconds_(sum|count)' >> "$R"
    fi
    grep -m1 "ready (" "$W/serve_$be.txt" >> "$R"
    kill -TERM $spid 2>/dev/null
    wait $spid 2>/dev/null
done
for pt in 4 8; do
    serve hardware --prep-threads $pt
    timeout 60 python3 "$here/gpu_e2e.py" --port $port --photo "$B/photo.jpg" --n 5 --warmup 0 > /dev/null 2>&1 # warm-up
    clients 8 "a server with --prep-threads $pt"
    grep -m1 "ready (" "$W/serve_hardware.txt" >> "$R"
    kill -TERM $spid 2>/dev/null
    wait $spid 2>/dev/null
done
log "done: $R"
cat "$R"
rm -rf "$W"
