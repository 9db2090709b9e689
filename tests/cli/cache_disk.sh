#!/usr/bin/env bash
# The on-disk result cache (serve --cache-dir), on 127.0.0.1 with the small
# golden ResNets:
#   a restart on the same directory answers a repeat from disk; a changed
#   model file (new digest) never gets the old entries; DELETE /v1/cache;
#   `camserve cache stats|clear`; kill -9 while the server writes under a
#   bounded load, restart: every entry valid or absent, and the server starts;
#   identical concurrent misses computed once (single-flight); another method
#   for a seen image skips decode (the prep cache).
#
#   bash tests/cli/cache_disk.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
LOAD_PIDS=
trap 'for p in $LOAD_PIDS; do kill -9 $p 2>/dev/null; done; cleanup_server; rm -rf "$tmp"' EXIT
need_tools

png=$src/tests/data/images/resize_src.png
model=$tmp/m.onnx
cp "$src/tests/golden/resnet_basic/model.onnx" "$model"
dir=$tmp/cache
explain() { req "$1" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam${2:-}"; }

# ---- persistence across a restart ----
start_server disk1 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 || exit 1
explain "first request" && jcheck "first is a miss" '.cache == "miss"'
want_top=$(jq -r '.predictions[0].index' "$tmp/body")
explain "repeat" && jcheck "repeat is a (memory) hit" '.cache == "hit"'
stop_server || fail "server did not stop"
start_server disk2 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 || exit 1
explain "after a restart" && jcheck "answered from disk" '.cache == "hit"' \
    && jcheck "same answer" ".predictions[0].index == $want_top and (.cam.overlay_png_base64 | length) > 100"
id=$(sha256sum "$png" | cut -d' ' -f1)
req "image_id after a restart (image store empty, result on disk)" 200 -H "Content-Type: application/json" \
    -d "{\"image_id\": \"$id\", \"method\": \"gradcam\"}" "$BASE/v1/explain" && jcheck "a hit" '.cache == "hit"'
if req "metrics" 200 "$BASE/metrics"; then
    grep -qE '^camserve_cache_hits_total\{tier="disk"\} [1-9]' "$tmp/body" && ok "disk hit counted" || fail "disk hit metric"
    grep -qE '^camserve_cache_entries\{tier="disk"\} [1-9]' "$tmp/body" && ok "disk entries shown" || fail "disk entries metric"
    grep -qE '^camserve_cache_bytes\{tier="disk"\} [1-9]' "$tmp/body" && ok "disk bytes shown" || fail "disk bytes metric"
fi

# ---- another precision is another answer ----
# the same model and directory restarted in bf16 (where the CPU has it):
# the fp32 answer on disk is not served for it, its own is, and the fp32
# server still finds its own after that
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
    stop_server || fail "server did not stop"
    start_server disk_bf16 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 --precision bf16 || exit 1
    explain "bf16 after fp32" && jcheck "bf16 computes its own (the fp32 entry is not served)" '.cache == "miss"'
    explain "bf16 repeat" && jcheck "bf16 repeat is a hit" '.cache == "hit"'
    req "models in bf16" 200 "$BASE/v1/models" && jcheck "/v1/models says bf16" '.models[0].precision == "bf16"'
    stop_server || fail "server did not stop"
    start_server disk_fp32 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 || exit 1
    explain "fp32 again" && jcheck "fp32 answered from disk" '.cache == "hit"' \
        && jcheck "its answer" ".predictions[0].index == $want_top"
else
    echo "no native bf16 on this CPU: the precision part of the cache key is not checked here"
fi

# ---- DELETE /v1/cache ----
req "DELETE /v1/cache?model=nope" 404 -X DELETE "$BASE/v1/cache?model=nope"
req "GET /v1/cache" 405 "$BASE/v1/cache"
req "DELETE /v1/cache?model=m" 200 -X DELETE "$BASE/v1/cache?model=m" && jcheck "removed memory + disk entries" '.removed >= 2'
explain "after DELETE" && jcheck "recomputed" '.cache == "miss"'
req "DELETE /v1/cache" 200 -X DELETE "$BASE/v1/cache" && jcheck "removed" '.removed >= 2'
stop_server || fail "server did not stop"
out=$("$bin" cache stats --cache-dir "$dir" --json) && echo "$out" | jq -e '.entries == 0' >/dev/null \
    && ok "cache stats: empty after DELETE" || fail "cache stats after DELETE: $out"

# ---- a changed model file is a new digest: old entries are never served ----
start_server disk3 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 || exit 1
explain "old model" && jcheck "computed" '.cache == "miss"'
stop_server || fail "server did not stop"
cp "$src/tests/golden/resnet_bottleneck/model.onnx" "$model"
start_server disk4 --model "$model:m" --cache-dir "$dir" --cache-disk-mb 8 || exit 1
explain "same name, new model file" && jcheck "not served from the old model's entry" '.cache == "miss"'
explain "again" && jcheck "now a hit" '.cache == "hit"'
stop_server || fail "server did not stop"
out=$("$bin" cache stats --cache-dir "$dir" --json) && echo "$out" | jq -e '.entries == 2' >/dev/null \
    && ok "cache stats: two entries (one per model)" || fail "cache stats: $out"
out=$("$bin" cache clear --cache-dir "$dir" --json) && echo "$out" | jq -e '.removed == 2 and .entries == 0' >/dev/null \
    && ok "cache clear" || fail "cache clear: $out"
"$bin" cache stats --cache-dir "$tmp/none" >/dev/null 2>&1 && fail "stats on a missing cache succeeded" || ok "stats on a missing cache fails"
"$bin" cache frobnicate >/dev/null 2>&1; [ $? = 2 ] && ok "unknown subcommand: usage error" || fail "unknown subcommand"

# ---- kill -9 while writing under load, twice; a small bound keeps it evicting ----
cp "$src/tests/golden/resnet_basic/model.onnx" "$model"
for round in 1 2; do
    start_server crash$round --model "$model:m" --cache-dir "$dir" --cache-disk-mb 1 --queue 16 || exit 1
    LOAD_PIDS=
    for c in 1 2 3; do
        (for i in $(seq 1 40); do
            curl -s -o /dev/null --max-time 5 -H "Content-Type: image/png" --data-binary @"$png" \
                "$BASE/v1/explain?alpha=0.$round$c$(printf %02d "$i")" || break
        done) &
        LOAD_PIDS="$LOAD_PIDS $!"
    done
    sleep 1.5
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    for p in $LOAD_PIDS; do wait "$p" 2>/dev/null; done
    LOAD_PIDS=
    out=$("$bin" cache stats --cache-dir "$dir" --verify --json)
    if echo "$out" | jq -e '.corrupt == 0 and .valid == .entries and .entries > 0 and .bytes <= .limit_bytes' >/dev/null; then
        ok "round $round: after kill -9 every entry is valid ($(echo "$out" | jq -c '{entries, valid, corrupt}'))"
    else
        fail "round $round: after kill -9: $out"
    fi
done
start_server after_crash --model "$model:m" --cache-dir "$dir" --cache-disk-mb 1 || exit 1
ok "server starts on the directory"
explain "serves after the crash" "&alpha=0.2140" && jcheck "hit or miss, never an error" '.cache == "hit" or .cache == "miss"'
stop_server || fail "server did not stop"

# ---- single-flight: identical concurrent misses are computed once ----
photo=$(photo_image)
[ -n "$photo" ] || photo=$png
start_server flight --model "$model:m" --workers 1 || exit 1
metric() { curl -s "$BASE/metrics" | grep -E "^$1 " | awk '{print $2}' | head -1; }
for i in 1 2 3 4 5 6; do
    curl -s -o "$tmp/flight$i" -w '%{http_code}\n' --max-time 30 -H "Content-Type: image/jpeg" \
        --data-binary @"$photo" "$BASE/v1/explain?method=gradcam++" > "$tmp/flight$i.code" &
    LOAD_PIDS="$LOAD_PIDS $!"
done
for p in $LOAD_PIDS; do wait "$p" 2>/dev/null; done
LOAD_PIDS=
[ "$(cat "$tmp"/flight*.code | sort -u)" = 200 ] && ok "6 identical concurrent requests: all 200" || fail "codes: $(cat "$tmp"/flight*.code | tr '\n' ' ')"
computed=$(metric 'camserve_stage_seconds_count\{stage="total"\}')
coalesced=$(metric camserve_cache_coalesced_total)
hits=$(metric 'camserve_cache_hits_total\{tier="memory"\}')
[ "$computed" = 1 ] && [ $((coalesced + hits)) = 5 ] \
    && ok "computed once ($coalesced waited for it, $hits memory hits)" \
    || fail "computed $computed times, coalesced $coalesced, hits $hits"
[ "$(for i in 1 2 3 4 5 6; do jq -c '[.predictions, .cam.overlay_png_base64]' "$tmp/flight$i"; done | sort -u | wc -l)" = 1 ] \
    && ok "all six answers identical" || fail "answers differ"
first_decode=$(cat "$tmp"/flight[1-6] | jq -s 'map(.timings_ms.decode) | max')
# ---- the prep cache: another method / class for a seen image skips decode ----
req "same photo, another method" 200 -H "Content-Type: image/jpeg" --data-binary @"$photo" \
    "$BASE/v1/explain?method=layercam&class=3" \
    && jcheck "decode skipped (first decode took $first_decode ms)" '.cache == "miss" and .timings_ms.decode == 0' \
    && jcheck "the answer is for this request" '.cam.method == "layercam" and .cam.class_index == 3 and .image.width > 0'
req "classify the same photo" 200 -H "Content-Type: image/jpeg" --data-binary @"$photo" "$BASE/v1/classify" \
    && jcheck "decode skipped" '.timings_ms.decode == 0 and .image.width > 0'
curl -s "$BASE/metrics" | grep -qE '^camserve_cache_entries\{tier="prepared"\} 1$' && ok "one prepared image" || fail "prepared metric"
# single-flight again, 20 rounds of 6 on the small PNG (computed in a few ms, so a
# request often arrives just as its leader finishes: it must then find the
# result, not compute it again)
before=$(metric 'camserve_stage_seconds_count\{stage="total"\}')
for r in $(seq 11 30); do
    pids=""
    for i in 1 2 3 4 5 6; do
        curl -s -o /dev/null --max-time 30 -H "Content-Type: image/png" --data-binary @"$png" \
            "$BASE/v1/explain?alpha=0.$r" & pids="$pids $!"
    done
    wait $pids
done
after=$(metric 'camserve_stage_seconds_count\{stage="total"\}')
[ $((after - before)) = 20 ] && ok "20 rounds of 6 identical requests: each computed once" \
    || fail "20 rounds of 6 identical requests computed $((after - before)) times"
stop_server || fail "server did not stop"

echo "cache_disk: $fails failure(s)"
[ "$fails" -eq 0 ]
