#!/usr/bin/env bash
# The HTTP API of `camserve serve`, against the small golden ResNet
# (64x64 input, 10 classes, no labels) on 127.0.0.1:
#   healthz, readyz, models, the UI files, explain (raw PNG, multipart,
#   JPEG photo), the cache (a repeat is a hit), format=png, classify,
#   image_id reuse, dynamic batching, metrics, flags from the environment.
#
#   bash tests/cli/server_api.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
model=$src/tests/golden/resnet_basic/model.onnx
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
trap 'cleanup_server; rm -rf "$tmp"' EXIT
need_tools

png=$src/tests/data/images/resize_src.png
photo=$(photo_image)

start_server api --model "$model:golden" --workers 1 --max-batch 4 || exit 1
grep -q "encode threads 1)" "$SERVER_LOG" && ok "a CPU server encodes on one thread by default" \
    || fail "CPU default encode threads: $(grep ready "$SERVER_LOG")"

# ---- liveness, readiness, models, UI ----
req "healthz" 200 "$BASE/healthz" && jcheck "healthz says ok" '.status == "ok"'
req "readyz" 200 "$BASE/readyz" && jcheck "readyz says ready" '.status == "ready"'
if req "GET /v1/models" 200 "$BASE/v1/models"; then
    jcheck "one model named golden" '.models | length == 1 and .[0].name == "golden"'
    jcheck "digest is 64 hex digits" '.models[0].digest | test("^[0-9a-f]{64}$")'
    jcheck "10 classes, 64x64 input" '.models[0].num_classes == 10 and .models[0].input.width == 64 and .models[0].input.height == 64'
    jcheck "candidate layers and a default among them" '.models[0] as $m | ($m.layers | length) > 3 and ([$m.layers[].name] | index($m.default_layer)) != null'
    jcheck "methods and colormaps listed" '(.methods | index("gradcam")) != null and (.colormaps | index("jet")) != null'
    jcheck "device and precision (the CLI tests run on the CPU)" '.models[0].device == "cpu" and .models[0].precision == "fp32"'
    digest=$(jq -r '.models[0].digest' "$tmp/body")
    want=$(sha256sum "$model" | cut -d' ' -f1)
    [ "$digest" = "$want" ] && ok "digest is SHA-256 of the model file" || fail "digest $digest != sha256sum $want"
fi
req "GET / (UI)" 200 "$BASE/" && grep -q "camserve" "$tmp/body" && grep -qi "content-type: text/html" "$tmp/headers" \
    && ok "UI is HTML" || fail "UI page"
req "GET /app.js" 200 "$BASE/app.js" && grep -qi "content-type: text/javascript" "$tmp/headers" && ok "app.js type" || fail "app.js type"
req "GET /style.css" 200 "$BASE/style.css"

# ---- explain: raw PNG body ----
if req "explain raw PNG" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam&topk=5"; then
    jcheck "answer has every field" 'has("model") and has("image_id") and has("predictions") and has("cam") and has("timings_ms") and has("cache")'
    jcheck "5 predictions, sorted, probabilities" '.predictions | length == 5 and (map(.score) | . == (sort | reverse)) and all(.[]; .score >= 0 and .score <= 1)'
    jcheck "cam fields" '.cam.method == "gradcam" and (.cam.layer | length) > 0 and (.cam.class_index | type) == "number"'
    jcheck "first answer is a miss" '.cache == "miss"'
    jcheck "timings: every stage" '.timings_ms | has("decode") and has("preprocess") and has("inference") and has("cam") and has("encode") and has("total")'
    jq -r .cam.overlay_png_base64 "$tmp/body" | base64 -d > "$tmp/overlay.png" 2>/dev/null
    jq -r .cam.heatmap_png_base64 "$tmp/body" | base64 -d > "$tmp/heatmap.png" 2>/dev/null
    [ "$(head -c 8 "$tmp/overlay.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok "overlay is a PNG" || fail "overlay is not a PNG"
    [ "$(head -c 8 "$tmp/heatmap.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok "heatmap is a PNG" || fail "heatmap is not a PNG"
    image_id=$(jq -r .image_id "$tmp/body")
    want=$(sha256sum "$png" | cut -d' ' -f1)
    [ "$image_id" = "$want" ] && ok "image_id is SHA-256 of the bytes" || fail "image_id $image_id != $want"
    top=$(jq -r '.predictions[0].index' "$tmp/body")
    cls=$(jq -r '.cam.class_index' "$tmp/body")
    [ "$top" = "$cls" ] && ok "class top explains the top prediction" || fail "class_index $cls != top $top"
fi
req "same request again" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam&topk=5" \
    && jcheck "repeat is a cache hit" '.cache == "hit"' && grep -qi "^x-cache: hit" "$tmp/headers" && ok "X-Cache: hit header" || fail "X-Cache header"
req "other colormap" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam&topk=5&colormap=viridis" \
    && jcheck "a changed parameter is a miss" '.cache == "miss"'

# ---- format=png, multipart, classify ----
if req "format=png" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?format=png"; then
    grep -qi "content-type: image/png" "$tmp/headers" && ok "format=png content type" || fail "format=png content type"
    [ "$(head -c 8 "$tmp/body" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok "format=png body is a PNG" || fail "format=png body"
fi
# an image larger than the overlay's 800 px: the server keeps it at display
# size once decoded (for every later overlay of it), the CLI resizes inside
# the overlay; the PNGs must still be the same bytes, for a fresh decode and
# for another method from the prep cache
if command -v python3 >/dev/null 2>&1; then
    python3 - "$tmp/big.png" <<'PY'
import struct, sys, zlib
w, h = 1200, 900
raw = bytearray()
for y in range(h):
    raw.append(0)
    for x in range(w):
        raw += bytes(((x * 7 + y) % 256, (y * 3) % 256, (x ^ y) % 256))
def chunk(t, d):
    c = t + d
    return struct.pack(">I", len(d)) + c + struct.pack(">I", zlib.crc32(c) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
    for m in gradcam layercam; do
        "$bin" explain --model "$model" --image "$tmp/big.png" --method $m --out "$tmp/big_$m" >/dev/null 2>&1
        if req "1200x900 PNG, $m, format=png" 200 -H "Content-Type: image/png" --data-binary @"$tmp/big.png" \
            "$BASE/v1/explain?format=png&method=$m"; then
            cmp -s "$tmp/body" "$tmp/big_$m/big.overlay.png" && ok "$m overlay: the server's PNG is the CLI's, byte for byte" \
                || fail "$m overlay: server and CLI PNGs differ"
        fi
    done
else
    echo "skip: no python3 to make a 1200x900 PNG (server vs CLI overlay)"
fi
req "multipart upload" 200 -F "image=@$png;type=image/png" -F method=layercam -F class=2 "$BASE/v1/explain" \
    && jcheck "multipart fields used" '.cam.method == "layercam" and .cam.class_index == 2' \
    && jcheck "multipart: image_id is SHA-256 of the file" ".image_id == \"$(sha256sum "$png" | cut -d' ' -f1)\""
# the server hashes uploads as they arrive: a body of many reads, and one
# without Content-Length (chunked), must hash the same as the file
if [ -n "$photo" ]; then
    photo_sum=$(sha256sum "$photo" | cut -d' ' -f1)
    req "photo, Content-Length" 200 -H "Content-Type: image/jpeg" --data-binary @"$photo" "$BASE/v1/classify" \
        && jcheck "photo: image_id is SHA-256 of the file" ".image_id == \"$photo_sum\""
    req "photo, chunked" 200 -H "Content-Type: image/jpeg" -H "Transfer-Encoding: chunked" --data-binary @"$photo" "$BASE/v1/classify" \
        && jcheck "chunked photo: image_id is SHA-256 of the file" ".image_id == \"$photo_sum\""
    req "photo, multipart" 200 -F "image=@$photo;type=image/jpeg" "$BASE/v1/classify" \
        && jcheck "multipart photo: image_id is SHA-256 of the file" ".image_id == \"$photo_sum\""
fi
if [ -n "$photo" ]; then
    # Uploads of 256 KB and more are hashed on the server's hashing thread
    # while they arrive: six at once, each a different file (the photo with
    # its own trailer after the JPEG's end), must each get its own SHA-256.
    pids=()
    for i in 1 2 3 4 5 6; do
        { cat "$photo"; head -c $((300000 + i * 4099)) /dev/urandom; } > "$tmp/big$i.jpg"
        curl -s --max-time 30 -H "Content-Type: image/jpeg" --data-binary @"$tmp/big$i.jpg" \
            "$BASE/v1/classify" -o "$tmp/big$i.json" &
        pids+=($!)
    done
    wait "${pids[@]}" # not a bare wait: the server runs in the background too
    same=0
    for i in 1 2 3 4 5 6; do
        [ "$(jq -r .image_id "$tmp/big$i.json" 2>/dev/null)" = "$(sha256sum "$tmp/big$i.jpg" | cut -d' ' -f1)" ] && same=$((same + 1))
    done
    [ "$same" = 6 ] && ok "6 concurrent large uploads: each image_id is the SHA-256 of its bytes" \
        || fail "concurrent large uploads: $same of 6 image_ids match"
fi
if req "classify" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/classify?topk=3"; then
    jcheck "classify: 3 predictions, no cam" '(.predictions | length) == 3 and (has("cam") | not)'
fi

# ---- image_id reuse: no upload, other parameters ----
if [ -n "${image_id:-}" ]; then
    req "image_id with another class" 200 -H "Content-Type: application/json" \
        -d "{\"image_id\": \"$image_id\", \"class\": 7, \"method\": \"gradcam++\"}" "$BASE/v1/explain" \
        && jcheck "image_id request computed" '.cam.class_index == 7 and .cam.method == "gradcampp" and .cache == "miss"'
    req "image_id again" 200 -H "Content-Type: application/json" \
        -d "{\"image_id\": \"$image_id\", \"class\": 7, \"method\": \"gradcam++\"}" "$BASE/v1/explain" \
        && jcheck "image_id repeat is a hit" '.cache == "hit"'
    req "image_id classify" 200 -H "Content-Type: application/json" -d "{\"image_id\": \"$image_id\"}" "$BASE/v1/classify"
fi

# ---- a real photo (JPEG, DCT-scaled decode) ----
if [ -n "$photo" ]; then
    if req "explain photo $(basename "$photo")" 200 -H "Content-Type: image/jpeg" --data-binary @"$photo" "$BASE/v1/explain"; then
        jcheck "photo size reported" '.image.width > 64 and .image.height > 64'
        jcheck "crop box inside the image" '.cam.box | length == 4 and .[0] >= 0 and .[2] <= 1 and .[0] < .[2] and .[1] < .[3]'
    fi
else
    echo "skip: no photo (darknet not installed, no python3)"
fi

# ---- metrics ----
if req "metrics" 200 "$BASE/metrics"; then
    m=$tmp/body
    v() { grep -E "^$1 " "$m" | awk '{print $2}' | head -1; }
    [ "$(v 'camserve_http_requests_total\{endpoint="/v1/explain",code="200"\}')" -ge 6 ] 2>/dev/null \
        && ok "explain 200 counter" || fail "explain 200 counter: $(grep 'explain",code="200' "$m")"
    [ "$(v 'camserve_cache_hits_total\{tier="memory"\}')" -ge 2 ] 2>/dev/null && ok "cache hits counted" || fail "cache hits"
    [ "$(v 'camserve_cache_misses_total')" -ge 3 ] 2>/dev/null && ok "cache misses counted" || fail "cache misses"
    for name in 'camserve_queue_depth{stage="infer"}' 'camserve_batch_size_count' 'process_resident_memory_bytes' \
                'camserve_model_load_seconds{model="golden"}' 'camserve_stage_seconds_bucket{stage="inference",le="+Inf"}' \
                'camserve_http_request_seconds_count{endpoint="/v1/explain"}' 'camserve_cache_bytes{tier="memory"}'; do
        grep -qF "$name " "$m" && ok "metric $name" || fail "metric $name missing"
    done
fi
stop_server TERM && [ "$STOP_RC" = 0 ] && ok "SIGTERM: exit 0 in ${STOP_SECONDS}s" || fail "SIGTERM exit (rc ${STOP_RC:-none})"

# ---- dynamic batching: concurrent compatible requests share a run ----
start_server batching --model "$model" --workers 1 --max-batch 8 --batch-window-ms 300 || exit 1
# Six explains at once (one curl, --parallel), up to three bursts: a batch
# forms only when requests overlap in the prep pool, which a loaded machine
# can spread apart; every burst must be answered, and one must batch.
batched=
for burst in 1 2 3; do
    urls=()
    for i in 1 2 3 4 5 6; do urls+=(-o /dev/null "$BASE/v1/explain?alpha=0.$burst$i"); done
    codes=$(curl -s --max-time 30 --parallel --parallel-max 6 -w '%{http_code}\n' \
        -H "Content-Type: image/png" --data-binary @"$png" "${urls[@]}")
    [ "$(echo "$codes" | grep -c '^200$')" -eq 6 ] && ok "burst $burst: 6 concurrent explains answered" \
        || fail "burst $burst: concurrent explains: $codes"
    curl -s "$BASE/metrics" >"$tmp/body"
    runs=$(grep -E '^camserve_batch_size_count ' "$tmp/body" | awk '{print $2}')
    images=$(grep -E '^camserve_batch_size_sum ' "$tmp/body" | awk '{print $2}')
    if [ -n "$runs" ] && [ "${runs:-0}" -lt "${images%.*}" ]; then
        batched=1
        break
    fi
done
[ -n "$batched" ] && ok "batched: $images images in $runs network runs" \
    || fail "no batching in 3 bursts: $images images in $runs runs"
stop_server TERM

# ---- admitted requests wait undecoded ----
# With one worker and batches of 1, at most 2 decoded requests wait for the
# worker; the rest of the queue stays compressed.  ScoreCAM makes each run
# ~10x slower than preparing its input, so without that bound the whole
# burst would be decoded into the infer queue at once.
start_server ahead --model "$model" --workers 1 --max-batch 1 --threads 1 || exit 1
urls=()
for i in $(seq 1 16); do urls+=(-o /dev/null "$BASE/v1/explain?method=scorecam&alpha=0.$((10 + i))"); done
curl -s --max-time 60 --parallel --parallel-max 16 -w '%{http_code}\n' -H "Content-Type: image/png" \
    --data-binary @"$png" "${urls[@]}" >"$tmp/ahead.codes" &
cpid=$!
max_infer=0
max_prep=0
while kill -0 "$cpid" 2>/dev/null; do
    read -r prep infer < <(curl -s --max-time 5 "$BASE/metrics" | awk '
        $1 == "camserve_queue_depth{stage=\"prep\"}" { p = $2 }
        $1 == "camserve_queue_depth{stage=\"infer\"}" { i = $2 }
        END { print p + 0, i + 0 }')
    [ "${prep:-0}" -gt "$max_prep" ] && max_prep=$prep
    [ "${infer:-0}" -gt "$max_infer" ] && max_infer=$infer
done
wait "$cpid"
[ "$(grep -c '^200$' "$tmp/ahead.codes")" -eq 16 ] && ok "16 concurrent ScoreCAM explains answered" \
    || fail "concurrent ScoreCAM explains: $(tr '\n' ' ' <"$tmp/ahead.codes")"
[ "$max_prep" -ge 3 ] && ok "a queue formed (up to $max_prep requests waiting undecoded)" \
    || fail "no queue seen (max prep depth $max_prep): the check below proves nothing"
[ "$max_infer" -le 2 ] && ok "at most 2 decoded requests waited for the worker (seen: $max_infer)" \
    || fail "$max_infer decoded requests waited for one worker (bound: 2)"
stop_server TERM

# ---- a request that would wait past its timeout is refused at once ----
# One worker, ScoreCAM (~20 ms a run here), a 60 ms timeout: after one run
# has taught the server the cost of a job, a burst of 16 leaves most of it
# with more work queued ahead than the timeout.  Those are answered 503 with
# the estimate at once, instead of 504 "timed out" after waiting 60 ms (an
# estimate a little short still ends in that 504).  A run slowed past
# 1.2 x the timeout by the burst itself makes the rest of the kind be
# refused at admission too, with 504 "timed out before it ran" (run_cost
# in service.c): that is a refusal at once as well.
# A build whose ScoreCAM takes longer than the timeout (ThreadSanitizer's)
# has it stopped (504): the burst then has nothing to show.
start_server fast503 --model "$model" --workers 1 --max-batch 1 --threads 1 --timeout-ms 60 || exit 1
CODE=$(curl -s --max-time 30 -o "$tmp/body" -w '%{http_code}' "$BASE/v1/explain?method=scorecam&alpha=0.5" \
    -H "Content-Type: image/png" --data-binary @"$png")
if [ "$CODE" = 200 ]; then
    ok "one ScoreCAM explain (sets the cost estimate) (HTTP 200)"
    fast_scorecam=1
elif [ "$CODE" = 504 ] && jq -e '.error | test("(ran|would run) past the 60 ms request timeout")' "$tmp/body" >/dev/null; then
    echo "skip: one ScoreCAM takes longer than the 60 ms timeout in this build and was stopped: $(jq -r .error "$tmp/body")"
    fast_scorecam=0
else
    fail "one ScoreCAM explain (sets the cost estimate): HTTP $CODE: $(head -c 300 "$tmp/body")"
    fast_scorecam=0
fi
# scorecam_burst NAME A [QUERY]: 16 concurrent ScoreCAM explains, alphas
# 0.(A+1) .. 0.(A+16) (16 keys), QUERY appended to each; answers in $tmp/NAME.1..16, status codes in $tmp/NAME.codes
scorecam_burst() {
    local urls=() i
    for i in $(seq 1 16); do urls+=(-o "$tmp/$1.$i" "$BASE/v1/explain?method=scorecam&alpha=0.$(($2 + i))${3:-}"); done
    curl -s --max-time 60 --parallel --parallel-max 16 -w '%{http_code}\n' -H "Content-Type: image/png" \
        --data-binary @"$png" "${urls[@]}" >"$tmp/$1.codes"
}
# burst_judged NAME MIN_REFUSED MAX_LATE OK_TEXT FAIL_TEXT: of burst NAME,
# at least MIN_REFUSED refused at admission (503 with the wait estimate, or
# 504 before the run) and at most MAX_LATE timed out after waiting or running
burst_judged() {
    local refused late
    refused=$(grep -lE 'of work queued ahead|timed out before it ran' "$tmp/$1".[0-9]* 2>/dev/null | wc -l)
    late=$(grep -lE '(ran|would run) past|timed out waiting' "$tmp/$1".[0-9]* 2>/dev/null | wc -l)
    if [ "$refused" -ge "$2" ] && [ "$late" -le "$3" ]; then
        ok "$4: $refused refused at admission, $late timed out ($(sort "$tmp/$1.codes" | uniq -c | tr -s ' \n' ' '))"
    else
        fail "$5: $refused refused at admission, $late timed out (504): $(tr '\n' ' ' <"$tmp/$1.codes")"
    fi
}
if [ "$fast_scorecam" = 1 ]; then
    scorecam_burst fast 10
    refused=$(grep -lE 'of work queued ahead, more than the 60 ms timeout|timed out before it ran' "$tmp"/fast.[0-9]* 2>/dev/null | wc -l)
    answered=$(grep -c '^200$' "$tmp/fast.codes")
    [ "$refused" -ge 1 ] && ok "$refused of 16 refused at admission with the wait estimate" \
        || fail "no request refused at admission: codes $(tr '\n' ' ' <"$tmp/fast.codes"), $(cat "$tmp/fast.16" 2>/dev/null | head -c 200)"
    [ "$answered" -ge 1 ] && ok "$answered of 16 computed" || fail "none of the burst computed: $(tr '\n' ' ' <"$tmp/fast.codes")"
    [ "$(grep -cE '^(503|504)$' "$tmp/fast.codes")" -eq $((16 - answered)) ] && ok "every other answer is a 503 or 504" \
        || fail "unexpected codes: $(tr '\n' ' ' <"$tmp/fast.codes")"
fi
# The estimate is per method.  After a run of cheap GradCAM explains, a
# burst of ScoreCAM explains (several times the cost) is still refused at
# admission once what is queued fills the timeout (from the sixth to eighth
# or so on), and what is admitted finishes in time.
# One moving average over all jobs (the previous code) had learnt
# GradCAM's cost, admitted most of the burst, and let it end in 504s.
for i in $(seq 1 10); do
    curl -s -o /dev/null --max-time 10 -H "Content-Type: image/png" --data-binary @"$png" \
        "$BASE/v1/explain?method=gradcam&alpha=0.$((40 + i))"
done
curl -s --max-time 5 "$BASE/metrics" >"$tmp/cost.prom"
# job_cost FILE KIND: the cost per job /metrics (in FILE) reports for KIND, in seconds
job_cost() { awk -F'} ' -v k="kind=\"$2\"" '/^camserve_job_cost_seconds\{/ && index($1, k) { print $2 }' "$1"; }
sc=$(job_cost "$tmp/cost.prom" scorecam)
gc=$(job_cost "$tmp/cost.prom" gradcam)
[ -n "$sc" ] && [ -n "$gc" ] && ok "/metrics reports the cost per method (scorecam ${sc}s, gradcam ${gc}s)" \
    || fail "no per-method cost in /metrics: $(grep job_cost "$tmp/cost.prom")"
if awk -v s="${sc:-1}" -v g="${gc:-1}" 'BEGIN { exit !(s * 1000 < 25 && s > 2.5 * g) }'; then
    scorecam_burst sb 60
    burst_judged sb 6 4 "ScoreCAM burst after GradCAM runs" "ScoreCAM burst judged by GradCAM's cost"
else
    echo "skip: ScoreCAM costs ${sc}s and GradCAM ${gc}s per run in this build, too slow or too close to separate under a 60 ms timeout"
fi
# ScoreCAM's cost depends on its kind, not only on the method: with
# aug_smooth it runs six images' worth.  After a run of plain ScoreCAMs at
# the stem layer (16 channels) has pulled the method's moving average down
# to a few ms, a burst of aug_smooth ones at that layer is judged by what
# that kind of run took when last measured (run_cost), not by the average:
# most of it is refused at admission, and what is admitted finishes in
# time.  Judged by the average (the previous code), most of it was
# admitted and ended in 504s.
stem=/relu/Relu_output_0
if [ "$fast_scorecam" = 1 ]; then
    CODE=$(curl -s --max-time 30 -o "$tmp/body" -w '%{http_code}' -H "Content-Type: image/png" --data-binary @"$png" \
        "$BASE/v1/explain?method=scorecam&layer=$stem&aug_smooth=1&alpha=0.79")
    aug=$(jq -r '.timings_ms | .inference + .cam | round' "$tmp/body" 2>/dev/null)
    for i in $(seq 1 12); do
        curl -s -o /dev/null --max-time 10 -H "Content-Type: image/png" --data-binary @"$png" \
            "$BASE/v1/explain?method=scorecam&layer=$stem&alpha=0.$((80 + i))"
    done
    curl -s --max-time 5 "$BASE/metrics" >"$tmp/cost2.prom"
    sc2=$(job_cost "$tmp/cost2.prom" scorecam)
    if [ "$CODE" = 200 ] && awk -v a="$aug" -v m="${sc2:-1}" 'BEGIN { exit !(a < 55 && a > 3000 * m) }'; then
        scorecam_burst lb 20 "&layer=$stem&aug_smooth=1"
        burst_judged lb 10 3 "aug_smooth ScoreCAM burst (${aug} ms a run) after plain ones (average ${sc2}s)" \
            "aug_smooth ScoreCAM burst (${aug} ms a run) judged by the plain ones' average (${sc2}s)"
    else
        echo "skip: an aug_smooth ScoreCAM at $stem: HTTP $CODE, ${aug} ms, against an average of ${sc2}s: not under 55 ms and over 3 x the average"
    fi
fi
stop_server TERM

# ---- the overlay and its PNG split over threads (--encode-threads) ----
# The 1200x900 image's 800x600 overlay is split 4 ways (a CPU server lends
# helpers while no network runs: these requests come one at a time): the
# PNG's bytes differ from the CLI's one-part PNG -- its stream holds the
# parts' sync flushes -- and its inflated rows (filter bytes and filtered
# pixels, which both write alike) are the same, Adler-32 checked by zlib.
if [ -f "$tmp/big.png" ] && [ -f "$tmp/big_gradcam/big.overlay.png" ]; then
    if start_server split --model "$model" --encode-threads 4; then
        grep -q "encode threads 4)" "$SERVER_LOG" && ok "the log names 4 encode threads" \
            || fail "no 'encode threads 4' in: $(grep ready "$SERVER_LOG")"
        if req "1200x900 PNG, format=png, --encode-threads 4" 200 -H "Content-Type: image/png" \
            --data-binary @"$tmp/big.png" "$BASE/v1/explain?format=png&method=gradcam"; then
            cp "$tmp/body" "$tmp/split.png"
            verdict=$(python3 - "$tmp/split.png" "$tmp/big_gradcam/big.overlay.png" <<'PY'
import struct, sys, zlib
def rows(path):
    b = open(path, "rb").read()
    i, idat = 8, b""
    while i < len(b):
        n, t = struct.unpack(">I4s", b[i:i + 8])
        if t == b"IDAT":
            idat += b[i + 8:i + 8 + n]
        i += 12 + n
    return b, zlib.decompress(idat)  # raises on a bad stream or Adler-32
split, one = rows(sys.argv[1]), rows(sys.argv[2])
print("same-rows" if split[1] == one[1] else "rows-differ", "same-bytes" if split[0] == one[0] else "bytes-differ")
PY
)
            case "$verdict" in
            "same-rows bytes-differ") ok "split overlay PNG: the CLI's pixels in a stream of parts" ;;
            "same-rows same-bytes")
                if [ "$(nproc)" -ge 2 ]; then fail "--encode-threads 4: the overlay PNG was not split"
                else echo "skip: one core, nothing to split over"; fi ;;
            *) fail "split overlay PNG: $verdict" ;;
            esac
        fi
        check_log
        stop_server TERM
    fi
fi
"$bin" serve --model "$model" --encode-threads 17 >"$tmp/et.out" 2>&1
[ $? -eq 2 ] && grep -q -- "--encode-threads must be an integer 0..16" "$tmp/et.out" && ok "--encode-threads 17 refused" \
    || fail "--encode-threads 17: $(cat "$tmp/et.out")"

# ---- a model exported with a fixed batch of 2 beside the same graph with a
# dynamic batch: every answer padded to the fixed batch, the same answers ----
mkdir -p "$tmp/b2"
cp "$src/tests/data/onnx/tiny_conv.onnx" "$src/tests/data/onnx/tiny_conv_b2.onnx" "$tmp/b2/"
for m in tiny_conv tiny_conv_b2; do printf '{"resize": 8, "crop": 8}\n' >"$tmp/b2/$m.json"; done
# (and --labels, one file per --model in order)
printf 'cat\ndog\nfox\nowl\n' >"$tmp/b2/dyn.txt"
printf 'a\nb\nc\nd\ne\n' >"$tmp/b2/b2.txt"   # one line too many: served, with a warning
if start_server fixedbatch --model "$tmp/b2/tiny_conv.onnx:dyn" --model "$tmp/b2/tiny_conv_b2.onnx:b2" \
    --labels "$tmp/b2/dyn.txt" --labels "$tmp/b2/b2.txt" \
    --workers 1 --max-batch 4 --batch-window-ms 200 --cache-mem-mb 0; then
    curl -s "$BASE/v1/models" >"$tmp/b2/models.out"
    python3 - "$tmp/b2" <<'PY' && ok "--labels: each model answers with its own file's labels" || fail "--labels (see above)"
import json, sys
d = sys.argv[1]
ms = {m["name"]: m["classes"] for m in json.load(open(d + "/models.out"))["models"]}
assert ms == {"dyn": ["cat", "dog", "fox", "owl"], "b2": ["a", "b", "c", "d"]}, ms  # classes: as many as the model has
PY
    grep -q "warning: $tmp/b2/b2.txt has 5 labels but .*tiny_conv_b2.onnx has 4 classes" "$SERVER_LOG" &&
        ! grep -q "dyn.txt has" "$SERVER_LOG" && ok "--labels: a count unlike the model's classes is warned about" ||
        fail "--labels count warning: $(grep -i warning "$SERVER_LOG")"
    # a class by its label, case folded; a part of one names the candidates
    req "class by label (DOG)" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?model=dyn&class=DOG" \
        && jcheck "class DOG is class 1, dog" '.cam.class_index == 1 and .cam.class_label == "dog"'
    req "class by label in a multipart form" 200 -F "image=@$png;type=image/png" -F model=dyn -F class=owl "$BASE/v1/explain" \
        && jcheck "class owl is class 3" '.cam.class_index == 3'
    req "class by a label's part" 400 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?model=dyn&class=ow" \
        && jcheck "names the labels containing it" '.error == "unknown class '"'ow'"': no label is exactly that; labels containing it: 3 owl"'
    for m in dyn b2; do
        curl -s -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?model=$m&topk=4" >"$tmp/b2/$m.json.out"
        curl -s -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/classify?model=$m&topk=4" >"$tmp/b2/$m.cls.out"
        curl -s -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?model=$m&aug_smooth=1&format=png" \
            -o "$tmp/b2/$m.aug.png" -w '%{http_code}' >"$tmp/b2/$m.aug.code"
    done
    [ "$(cat "$tmp/b2/dyn.aug.code") $(cat "$tmp/b2/b2.aug.code")" = "200 200" ] &&
        cmp -s "$tmp/b2/dyn.aug.png" "$tmp/b2/b2.aug.png" && ok "fixed batch of 2: aug_smooth answers the dynamic graph's overlay" ||
        fail "fixed batch of 2, aug_smooth: HTTP $(cat "$tmp/b2/dyn.aug.code") / $(cat "$tmp/b2/b2.aug.code"), overlays $(cmp "$tmp/b2/dyn.aug.png" "$tmp/b2/b2.aug.png" 2>&1)"
    # three at once: a batch of 3, run as 4 (two runs of the fixed 2)
    urls=()
    for i in 1 2 3; do urls+=(-o "$tmp/b2/par$i.out" "$BASE/v1/explain?model=b2&topk=4&alpha=0.$i"); done
    curl -s --max-time 30 --parallel --parallel-max 3 -H "Content-Type: image/png" --data-binary @"$png" "${urls[@]}"
    python3 - "$tmp/b2" <<'PY' && ok "fixed batch of 2: the dynamic graph's answers, alone and with three requests at once" \
        || fail "fixed batch of 2: answers differ (see above)"
import json, sys
d = sys.argv[1]
def preds(n):
    r = json.load(open(f"{d}/{n}"))
    return [(p["index"], p["score"]) for p in r["predictions"]], r.get("cam", {}).get("class_index")
ref = preds("dyn.json.out")
for n in ["b2.json.out", "par1.out", "par2.out", "par3.out"]:
    got = preds(n)
    assert [i for i, _ in got[0]] == [i for i, _ in ref[0]] and got[1] == ref[1], (n, got, ref)
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got[0], ref[0])), (n, got, ref)
a, b = preds("dyn.cls.out"), preds("b2.cls.out")
assert [i for i, _ in a[0]] == [i for i, _ in b[0]], (a, b)
names = {"dyn": "cat dog fox owl".split(), "b2": "a b c d".split()}
for m in names:
    for p in json.load(open(f"{d}/{m}.cls.out"))["predictions"]:
        assert p["label"] == names[m][p["index"]], (m, p)
PY
    check_log
    stop_server TERM
fi

# ---- flags from the environment; a flag wins ----
CAMSERVE_WORKERS=abc "$bin" serve --model "$model" >"$tmp/env.out" 2>&1
[ $? -eq 2 ] && grep -q -- "--workers" "$tmp/env.out" && ok "CAMSERVE_WORKERS is read (bad value: usage error)" \
    || fail "CAMSERVE_WORKERS not read: $(cat "$tmp/env.out")"
export CAMSERVE_MAX_BATCH=3 CAMSERVE_PORT=not-a-port
if start_server env --model "$model"; then
    grep -q "max batch 3" "$SERVER_LOG" && ok "CAMSERVE_MAX_BATCH=3 applied" || fail "env max batch: $(cat "$SERVER_LOG")"
    ok "--port flag wins over CAMSERVE_PORT"
fi
unset CAMSERVE_MAX_BATCH CAMSERVE_PORT
stop_server TERM

echo "server_api: $fails failure(s)"
[ "$fails" -eq 0 ]
