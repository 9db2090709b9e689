#!/usr/bin/env bash
# Load benchmark of `camserve serve` on 127.0.0.1 with ResNet-50 (issue 6):
#
#   bench/load.sh [CAMSERVE_BIN]          (default build/camserve)
#
# One server, four phases, every one bounded and self-stopping:
#   1. the first request (one new 4000x3000 photo), then VmRSS;
#   2. light load: LIGHT (20) new 4000x3000 q92 photos uploaded one after
#      another (all misses): p50/p95 of timings_ms.total and of the client's
#      latency, median per stage;
#   3. CLIENTS (100) concurrent clients for DURATION (30) s, each request a
#      new photo with probability MISS_PCT (10 %) -- a photo of a POOL (50)
#      made distinct by a JPEG comment segment, so every miss is a new image
#      -- else a repeat (hit): a re-upload of a small JPEG or an image_id
#      request for one of the light-load photos; VmRSS sampled every 0.5 s;
#   4. repeats only, CLIENTS clients, HIT_DURATION (10) s for each of: re-upload
#      of the small JPEG, image_id of the small JPEG, image_id of the photos.
# The client (bench/load_client.c, built here with gcc) is closed-loop: each
# connection sends its next request when its answer is in; a 503 is not
# retried later, the client goes on with its next request at once.
#
# Writes the markdown report to OUT (bench/results/cpu-load.md) and the stage
# chart to CHART (bench/results/stage-breakdown.svg, by bench/stage_chart.py).
# env: MODEL (bench/.peer/resnet50.onnx: `bench/export_models.py bench/.peer`),
#      CLIENTS, DURATION, HIT_DURATION, MISS_PCT, LIGHT, POOL,
#      ID_PHOTOS (LIGHT: how many of the light-load photos, the last ones,
#      are asked for by image_id; with small caches only the last few are
#      still held, and an evicted one is rightly a 404),
#      WORKERS (1), MAX_BATCH (unset: the server picks, 1 on the CPU), QUEUE (64),
#      SERVE_ARGS (more server flags, e.g. "--cache-mem-mb 16"),
#      OUT, CHART, PY (/usr/bin/python3 with PIL + numpy, for the photos).
# Needs gcc, curl, /usr/bin/python3 (PIL, numpy) and the darknet package's
# photos (/usr/share/darknet/data/*.jpg).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/camserve}
model=${MODEL:-$root/bench/.peer/resnet50.onnx}
clients=${CLIENTS:-100}
duration=${DURATION:-30}
hit_duration=${HIT_DURATION:-10}
miss_pct=${MISS_PCT:-10}
light=${LIGHT:-20}
pool=${POOL:-50}
id_photos=${ID_PHOTOS:-$light}
workers=${WORKERS:-1}
max_batch=${MAX_BATCH:-}
queue=${QUEUE:-64}
out=${OUT:-$root/bench/results/cpu-load.md}
chart=${CHART:-$root/bench/results/stage-breakdown.svg}
py=${PY:-/usr/bin/python3}

die() { echo "load.sh: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no camserve binary at $bin (build it, or pass its path)"
[ -f "$model" ] || die "no $model: run /usr/bin/python3 bench/export_models.py bench/.peer"
ls /usr/share/darknet/data/*.jpg >/dev/null 2>&1 || die "needs the darknet package's photos (apt-get install darknet)"
"$py" -c 'import PIL, numpy' 2>/dev/null || die "$py lacks PIL or numpy (python3-pil, python3-numpy)"
[ "$pool" -ge 1 ] && [ "$light" -ge 1 ] || die "POOL and LIGHT must be >= 1"
[ "$id_photos" -ge 1 ] && [ "$id_photos" -le "$light" ] || die "ID_PHOTOS must be 1..LIGHT"

work=$(mktemp -d "${TMPDIR:-/tmp}/camserve-bench-load.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started_at=$(date -u '+%Y-%m-%d %H:%M UTC')
t_begin=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load.sh: building the client, making $((light + 1 > pool ? light + 1 : pool)) photos in $work" >&2
gcc -std=c11 -O2 -Wall -pthread "$root/bench/load_client.c" -o "$work/load_client"
client=$work/load_client

# ---- photos: darknet's photos cropped at varied 4:3 windows, upscaled to
# 4000x3000, mirrored every other one, plus sensor-like noise (sigma 3), q92.
nphotos=$((light + 1 > pool ? light + 1 : pool))
"$py" - "$work/photos" "$nphotos" "$work/small.jpg" <<'EOF'
import glob, os, sys
import numpy as np
from PIL import Image
out, n, small = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srcs = sorted(glob.glob('/usr/share/darknet/data/*.jpg'))
rng = np.random.default_rng(1234)
noise = rng.normal(0, 3.0, (3000 + 64, 4000 + 64, 3)).astype(np.float32)
os.makedirs(out, exist_ok=True)
for i in range(n):
    im = Image.open(srcs[i % len(srcs)]).convert('RGB')
    w, h = im.size
    cw = int(w * (0.6 + 0.4 * rng.random()))
    ch = min(h, cw * 3 // 4)
    cw = ch * 4 // 3
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((4000, 3000), Image.BICUBIC)
    if i % 2:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float32)
    dx, dy = int(rng.integers(0, 64)), int(rng.integers(0, 64))
    a += noise[dy:dy + 3000, dx:dx + 4000]
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f'{out}/photo{i:03d}.jpg', quality=92)
Image.open('/usr/share/darknet/data/dog.jpg').convert('RGB').resize((320, 240), Image.BILINEAR).save(small, quality=90)
EOF
photos=("$work"/photos/photo*.jpg)
printf '%s\n' "${photos[0]}" >"$work/first.list"
printf '%s\n' "${photos[@]:1:$light}" >"$work/light.list"
printf '%s\n' "${photos[@]:0:$pool}" >"$work/pool.list"
echo "$work/small.jpg" >"$work/small.list"
sha256sum "${photos[@]:$((1 + light - id_photos)):$id_photos}" | cut -c1-64 >"$work/light_ids.list"
sha256sum "$work/small.jpg" | cut -c1-64 >"$work/small_ids.list"
photo_mb=$(du -cb "${photos[@]}" | tail -1 | awk -v n="$nphotos" '{ printf "%.2f", $1 / n / 1e6 }')
small_kb=$(($(stat -c %s "$work/small.jpg") / 1024))

# ---- the server
model_shown=${model#"$root"/}
serve_args=(serve --model "$model" --host 127.0.0.1 --port 0 --workers "$workers" --queue "$queue")
[ -n "$max_batch" ] && serve_args+=(--max-batch "$max_batch")
# SERVE_ARGS: more flags for the server, e.g. smaller caches (word-split)
# shellcheck disable=SC2206
[ -n "${SERVE_ARGS:-}" ] && serve_args+=($SERVE_ARGS)
"$bin" "${serve_args[@]}" >"$work/serve.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 600); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$work/serve.log" | head -1)
    [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    kill -0 "$pid" 2>/dev/null || die "the server exited: $(cat "$work/serve.log")"
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] || die "not ready: $(cat "$work/serve.log")"
base=http://127.0.0.1:$port
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
# kv FILE KEY: a value from a client summary
kv() { awk -F= -v k="$2" '$1 == k { print $2; exit }' "$1"; }
# wait_idle: until the server has nothing admitted (answers of a finished phase)
wait_idle() {
    for _ in $(seq 1 300); do
        n=$(curl -s "$base/metrics" | awk '$1 == "camserve_inflight" { print $2 }')
        [ "${n%.*}" = 0 ] && return 0
        sleep 0.2
    done
}
rss_ready=$(rss)

# ---- 1. the first request, 2. light load
echo "load.sh: light load ($light new photos, one at a time)" >&2
"$client" --port "$port" --clients 1 --requests 1 --miss-pct 100 --miss-files "$work/first.list" --no-tag \
    >"$work/first.kv"
rss_first=$(rss)
curl -s "$base/metrics" >"$work/metrics_first.txt"
"$client" --port "$port" --clients 1 --requests "$light" --miss-pct 100 --miss-files "$work/light.list" --no-tag \
    --out "$work/light.txt" >"$work/light.kv"
# the small JPEG, computed once so that its re-uploads are hits
curl -s -o /dev/null -H 'Content-Type: image/jpeg' --data-binary @"$work/small.jpg" "$base/v1/explain"
rss_light=$(rss)

# ---- 3. the mix
echo "load.sh: $clients clients for $duration s, $miss_pct % new photos" >&2
"$client" --port "$port" --clients "$clients" --duration "$duration" --miss-pct "$miss_pct" \
    --miss-files "$work/pool.list" --tag "mix$$" --hit-files "$work/small.list" --hit-ids "$work/light_ids.list" \
    --pid "$pid" --rss-out "$work/rss.txt" --rss-label mix >"$work/mix.kv"
wait_idle
rss_after_mix=$(rss)

# ---- 4. repeats only
hit_runs=("upload:--hit-files $work/small.list" "id_small:--hit-ids $work/small_ids.list" "id_photo:--hit-ids $work/light_ids.list")
for r in "${hit_runs[@]}"; do
    name=${r%%:*}
    echo "load.sh: repeats only ($name), $clients clients for $hit_duration s" >&2
    # shellcheck disable=SC2086
    "$client" --port "$port" --clients "$clients" --duration "$hit_duration" ${r#*:} \
        --pid "$pid" --rss-out "$work/rss.txt" --rss-label "$name" >"$work/hit_$name.kv"
done
wait_idle
rss_end=$(rss)
curl -s "$base/metrics" >"$work/metrics.txt"
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=

# ---- the report
peak_mix=$(awk '$1 == "mix" && $3 > m { m = $3 } END { print m + 0 }' "$work/rss.txt")
peak_all=$(awk '$3 > m { m = $3 } END { print m + 0 }' "$work/rss.txt")
nsamples=$(wc -l <"$work/rss.txt")
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# light-load statistics over the 200 answers: column c of light.txt
# (kind status client total queue decode preprocess inference cam encode cache)
lp() { # lp COLUMN PERCENT
    awk -v c="$1" '$2 == 200 { print $c }' "$work/light.txt" | sort -g |
        awk -v p="$2" '{ v[NR] = $1 } END { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; printf "%.1f", v[k] }'
}
l_ok=$(awk '$2 == 200 && $11 == "miss"' "$work/light.txt" | wc -l)
l_srv50=$(lp 4 50) l_srv95=$(lp 4 95) l_cli50=$(lp 3 50) l_cli95=$(lp 3 95)
m_queue=$(lp 5 50) m_decode=$(lp 6 50) m_prep=$(lp 7 50) m_infer=$(lp 8 50) m_cam=$(lp 9 50) m_enc=$(lp 10 50)
metric() { awk -v k="$1" 'index($0, k) == 1 { print $2; exit }' "$work/metrics.txt"; }
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? v <= t : v >= t; print ok ? "**yes**" : "**no**" }'; }

hit_rps_upload=$(kv "$work/hit_upload.kv" all_ok_rps)
hit_rps_id_small=$(kv "$work/hit_id_small.kv" all_ok_rps)
hit_rps_id_photo=$(kv "$work/hit_id_photo.kv" all_ok_rps)
# three decimals: the target is judged on them, not on a rounded 1.30
rss_ratio=$(awk -v a="$peak_all" -v b="$rss_first" 'BEGIN { printf "%.3f", a / b }')
caches_kb() { awk '/^camserve_cache_bytes\{tier="(memory|images|prepared)"\}/ { s += $2 } END { printf "%d", s / 1024 }' "$1"; }
rss_first_nc=$((rss_first - $(caches_kb "$work/metrics_first.txt")))
rss_end_nc=$((rss_end - $(caches_kb "$work/metrics.txt")))
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
version=$("$bin" version 2>/dev/null | head -1 || echo camserve)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "# camserve under load: ResNet-50 on the CPU"
    echo
    echo "Measured by \`bench/load.sh\` on $started_at: $(nproc) cores ($cpu), $version,"
    echo "\`$(basename "$model")\` (torchvision ResNet-50, random weights, from \`bench/export_models.py\`; 224 px, ImageNet"
    echo "preprocessing defaults). Server and load client ran on the same machine (the client is one"
    echo "epoll thread, \`bench/load_client.c\`), so the client's CPU time comes out of the server's 2 cores."
    echo "Photos: 4000×3000 JPEG q92 made from the darknet package's photos (varied crops, upscaled,"
    echo "sensor-like noise), ${photo_mb} MB on average; the small repeat image is a 320×240 JPEG (${small_kb} KB)."
    echo
    echo "Server: \`camserve ${serve_args[*]/#$model/$model_shown}\` (\`--port 0\`: a free port)."
    if [ "$id_photos" != "$light" ]; then
        echo "Run with \`ID_PHOTOS=$id_photos\`: the photos asked for by \`image_id\` are the last $id_photos of the light load."
    fi
    echo
    echo "## Targets (issue 6)"
    echo
    echo "| target | measured | met |"
    echo "|---|---|---|"
    echo "| p50 of a new 4000×3000 photo at light load (upload → predictions + overlay PNG) ≤ 50 ms — the seed's PyTorch + PIL pipeline: ~550 ms | ${l_cli50} ms at the client, ${l_srv50} ms server-side (\`timings_ms.total\`) | $(met "$l_cli50" 50 le) |"
    echo "| repeats ≥ 3000 requests/s ($clients clients) | ${hit_rps_upload} req/s re-uploading the small JPEG; ${hit_rps_id_small} req/s by \`image_id\` (small JPEG); ${hit_rps_id_photo} req/s by \`image_id\` (4000×3000 photos, ~1 MB answers) | $(met "$hit_rps_upload" 3000 ge) / $(met "$hit_rps_id_small" 3000 ge) / $(met "$hit_rps_id_photo" 3000 ge) |"
    echo "| peak resident memory with $clients clients ≤ 1.3 × after the first request | peak $(mb "$peak_all") MB / first $(mb "$rss_first") MB = ${rss_ratio}× | $(met "$rss_ratio" 1.3 le) |"
    echo
    echo "## Light load: $light new photos, one at a time"
    echo
    echo "Each upload is a photo the server has not seen (a miss: decode, preprocess, forward, Grad-CAM,"
    echo "overlay + two PNGs); $l_ok of $light answered 200 with \`\"cache\": \"miss\"\`. The first request of the"
    echo "server (another photo, before these) took $(kv "$work/first.kv" all_client_p50_ms) ms at the client."
    echo
    echo "| | p50 ms | p95 ms |"
    echo "|---|---:|---:|"
    echo "| server, \`timings_ms.total\` | $l_srv50 | $l_srv95 |"
    echo "| client, request sent → answer read | $l_cli50 | $l_cli95 |"
    echo
    echo "Median per stage (server \`timings_ms\`, ms):"
    echo
    echo "| queue | decode | preprocess | inference | cam | encode | total |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $m_queue | $m_decode | $m_prep | $m_infer | $m_cam | $m_enc | $l_srv50 |"
    echo
    echo "![stage breakdown](stage-breakdown.svg)"
    echo
    echo "## $clients clients for $duration s: $miss_pct % new photos, the rest repeats"
    echo
    echo "A request is a new photo with probability $miss_pct % (one of $pool photos with a unique JPEG comment"
    echo "segment, so each is a new image), else a repeat: a re-upload of the small JPEG or an \`image_id\`"
    echo "request for one of the last $id_photos light-load photos (half each). Throughput counts the answers that arrived"
    echo "within the $duration s; latencies are those of the 200 answers (the answers in flight at the end"
    echo "were awaited: $(kv "$work/mix.kv" answered) answers in all, $(kv "$work/mix.kv" abandoned) abandoned, $(kv "$work/mix.kv" socket_errors) socket errors)."
    echo
    echo "| requests | answered | 200/s | all answers/s | 503 | other errors | p50 ms | p95 ms | p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for k in all miss hit_upload hit_id; do
        [ -n "$(kv "$work/mix.kv" "${k}_requests")" ] || continue
        label=$k
        case $k in
        all) label="all" ;;
        miss) label="new photos (misses)" ;;
        hit_upload) label="repeats: re-upload of the small JPEG" ;;
        hit_id) label="repeats: \`image_id\` of a photo" ;;
        esac
        echo "| $label | $(kv "$work/mix.kv" "${k}_requests") | $(kv "$work/mix.kv" "${k}_ok_rps") | $(kv "$work/mix.kv" "${k}_rps") | $(kv "$work/mix.kv" "${k}_503") | $(kv "$work/mix.kv" "${k}_other_errors") | $(kv "$work/mix.kv" "${k}_client_p50_ms") | $(kv "$work/mix.kv" "${k}_client_p95_ms") | $(kv "$work/mix.kv" "${k}_client_p99_ms") |"
    done
    echo
    echo "Computed requests (misses) server-side: \`timings_ms.queue\` p50 $(kv "$work/mix.kv" miss_server_queue_p50_ms) ms,"
    echo "p95 $(kv "$work/mix.kv" miss_server_queue_p95_ms) ms; \`total\` p50 $(kv "$work/mix.kv" miss_server_total_p50_ms) ms, p95 $(kv "$work/mix.kv" miss_server_total_p95_ms) ms."
    echo "Batch sizes over the whole run: $(awk '/^camserve_batch_size_sum/ { s = $2 } /^camserve_batch_size_count/ { c = $2 } END { if (c > 0) printf "%.2f on average over %d network runs", s / c, c; else print "n/a" }' "$work/metrics.txt")."
    echo
    echo "## Repeats only: $clients clients, $hit_duration s each"
    echo
    echo "| repeat | answered | 200/s | 503 | other errors | p50 ms | p95 ms | p99 ms | server p50 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in upload:"re-upload of the small JPEG (${small_kb} KB body)" id_small:"\`image_id\` of the small JPEG" id_photo:"\`image_id\` of $id_photos of the 4000×3000 photos"; do
        f=$work/hit_${r%%:*}.kv
        echo "| ${r#*:} | $(kv "$f" all_requests) | $(kv "$f" all_ok_rps) | $(kv "$f" all_503) | $(kv "$f" all_other_errors) | $(kv "$f" all_client_p50_ms) | $(kv "$f" all_client_p95_ms) | $(kv "$f" all_client_p99_ms) | $(kv "$f" all_server_total_p50_ms) |"
    done
    echo
    echo "Every repeat answer is the full JSON (predictions + both PNGs as base64): ~0.2 MB for the"
    echo "small JPEG, ~1 MB for a photo (its overlay is 800×600). Cache hits answered: upload $(kv "$work/hit_upload.kv" all_cache_hit), image_id $(kv "$work/hit_id_small.kv" all_cache_hit) + $(kv "$work/hit_id_photo.kv" all_cache_hit)."
    echo
    echo "## Resident memory (VmRSS of the server, /proc/PID/status)"
    echo
    echo "Sampled every 0.5 s during the $clients-client phases ($nsamples samples)."
    echo
    echo "| when | MB |"
    echo "|---|---:|"
    echo "| ready, before any request | $(mb "$rss_ready") |"
    echo "| after the first request | $(mb "$rss_first") |"
    echo "| after the light load | $(mb "$rss_light") |"
    echo "| peak, $clients clients, mix | $(mb "$peak_mix") |"
    echo "| peak, all $clients-client phases | $(mb "$peak_all") |"
    echo "| after the mix, idle | $(mb "$rss_after_mix") |"
    echo "| at the end, idle | $(mb "$rss_end") |"
    echo
    echo "What the caches held at the end (\`/metrics\`): result cache $(mb "$(awk '/^camserve_cache_bytes\{tier="memory"\}/ { printf "%d", $2 / 1024 }' "$work/metrics.txt")") MB"
    echo "($(metric 'camserve_cache_entries{tier="memory"}') entries, limit $(mb "$(awk '/^camserve_cache_limit_bytes\{tier="memory"\}/ { printf "%d", $2 / 1024 }' "$work/metrics.txt")") MB), image store $(mb "$(awk '/^camserve_cache_bytes\{tier="images"\}/ { printf "%d", $2 / 1024 }' "$work/metrics.txt")") MB"
    echo "($(metric 'camserve_cache_entries{tier="images"}') images), prepared images $(mb "$(awk '/^camserve_cache_bytes\{tier="prepared"\}/ { printf "%d", $2 / 1024 }' "$work/metrics.txt")") MB ($(metric 'camserve_cache_entries{tier="prepared"}') entries)."
    echo
    echo "Resident memory less the three caches' bytes: $(mb "$rss_first_nc") MB after the first request, $(mb "$rss_end_nc") MB"
    echo "at the end (the caches are bounded: \`--cache-mem-mb\` 256, \`--image-store-mb\` 128, \`--prep-cache-mb\` 64 by default)."
    echo
    echo "## Commands"
    echo
    echo '```sh'
    echo "bench/load.sh build/camserve      # CLIENTS=$clients DURATION=$duration HIT_DURATION=$hit_duration MISS_PCT=$miss_pct LIGHT=$light POOL=$pool"
    echo "# what it runs (PORT: the one the server printed; PID: the server's):"
    echo "camserve ${serve_args[*]/#$model/$model_shown}"
    echo "load_client --port PORT --clients 1 --requests 1 --miss-files first.list --miss-pct 100 --no-tag"
    echo "load_client --port PORT --clients 1 --requests $light --miss-files light.list --miss-pct 100 --no-tag --out light.txt"
    echo "load_client --port PORT --clients $clients --duration $duration --miss-pct $miss_pct --miss-files pool.list \\"
    echo "    --hit-files small.list --hit-ids light_ids.list --pid PID --rss-out rss.txt"
    echo "load_client --port PORT --clients $clients --duration $hit_duration --hit-files small.list --pid PID ...   # then --hit-ids small_ids.list, --hit-ids light_ids.list"
    echo '```'
    echo
    echo "The run took $(($(date +%s) - t_begin)) s; load average (1, 5, 15 min) when it began: $load_start, when it"
    echo "ended: $load_end (this run's own server and client included). Hit throughput is sensitive to other"
    echo "work on the machine: run it on an otherwise idle machine."
} >"$out"

"$py" "$root/bench/stage_chart.py" --out "$chart" --n "$l_ok" --total "$l_srv50" --client "$l_cli50" \
    queue="$m_queue" decode="$m_decode" preprocess="$m_prep" inference="$m_infer" cam="$m_cam" encode="$m_enc"
cat "$out"
echo "load.sh: wrote $out and $chart" >&2
