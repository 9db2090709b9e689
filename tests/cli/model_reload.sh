#!/usr/bin/env bash
# Hot reload of a served model file, on 127.0.0.1 with the small golden
# models: the file replaced while requests run -> the new model serves (new
# digest in /v1/models, new answers) and no request fails; a broken file ->
# the previous version keeps serving and one line on stderr says why; a good
# file again -> reloaded.
#
#   bash tests/cli/model_reload.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
LOAD_PID=
trap '[ -n "$LOAD_PID" ] && kill -9 $LOAD_PID 2>/dev/null; cleanup_server; rm -rf "$tmp"' EXIT
need_tools

png=$src/tests/data/images/resize_src.png
a=$src/tests/golden/resnet_basic/model.onnx
b=$src/tests/golden/resnet_bottleneck/model.onnx
model=$tmp/m.onnx
cp "$a" "$model"
sum_a=$(sha256sum "$a" | cut -d' ' -f1)
sum_b=$(sha256sum "$b" | cut -d' ' -f1)

digest() { curl -s --max-time 5 "$BASE/v1/models" | jq -r '.models[0].digest'; }
wait_digest() { # wait_digest WANT: up to 8 s
    for _ in $(seq 1 80); do
        [ "$(digest)" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
# replace the file the way deployments do: a new file renamed over the old
swap_in() { cp "$1" "$tmp/new.onnx" && mv -f "$tmp/new.onnx" "$model"; }

# --labels: the caller's labels file, read again when the model reloads
for i in $(seq 0 9); do echo "label $i"; done >"$tmp/labels.txt"
start_server reload --model "$model:m" --labels "$tmp/labels.txt" --workers 1 || exit 1
[ "$(digest)" = "$sum_a" ] && ok "serving model A" || fail "digest before: $(digest)"
req "explain with A" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam"
logits_a=$(jq -c '[.predictions[] | .score]' "$tmp/body")

# requests keep running through the swap; every one must succeed
(for i in $(seq 1 60); do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 -H "Content-Type: image/png" --data-binary @"$png" \
        "$BASE/v1/explain?alpha=0.$((100 + i))"
done) > "$tmp/codes" &
LOAD_PID=$!
sleep 0.3
swap_in "$b"
wait_digest "$sum_b" && ok "model B served after the file changed" || fail "digest after swap: $(digest)"
wait "$LOAD_PID"
LOAD_PID=
[ "$(sort -u "$tmp/codes")" = 200 ] && ok "$(wc -l < "$tmp/codes") requests across the swap: all 200" \
    || fail "codes across the swap: $(sort "$tmp/codes" | uniq -c | tr '\n' ' ')"
req "explain with B" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam"
jcheck "computed anew (new digest, new key)" '.cache == "miss"'
jcheck "labels from --labels after the reload" '[.predictions[] | .label == "label \(.index)"] | all and length > 0'
[ "$(jq -c '[.predictions[] | .score]' "$tmp/body")" != "$logits_a" ] && ok "answer differs from model A's" || fail "same answer as A"
grep -q "model 'm' reloaded from" "$SERVER_LOG" && ok "reload logged" || fail "no reload line in the log"

# a broken file: B keeps serving
printf 'this is not an onnx model' > "$tmp/broken.onnx"
swap_in "$tmp/broken.onnx"
for _ in $(seq 1 80); do grep -q "does not load" "$SERVER_LOG" && break; sleep 0.1; done
[ "$(grep -c "does not load; still serving the previous version" "$SERVER_LOG")" = 1 ] \
    && ok "broken file: one line on stderr: $(grep "does not load" "$SERVER_LOG" | head -c 200)" \
    || fail "broken file not reported once: $(grep -c "does not load" "$SERVER_LOG")"
[ "$(digest)" = "$sum_b" ] && ok "still serving B" || fail "digest after broken file: $(digest)"
req "explain still works" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam" \
    && jcheck "from B's cache" '.cache == "hit"'
curl -s "$BASE/metrics" | grep -q '^camserve_model_reloads_total{model="m",result="failed"} 1$' \
    && ok "failed reload counted" || fail "reload metric"

# a good file again
swap_in "$a"
wait_digest "$sum_a" && ok "model A again" || fail "digest after restoring A: $(digest)"
req "explain with A again" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain?method=gradcam" \
    && jcheck "A's cached answer" ".cache == \"hit\" and ([.predictions[] | .score] | tojson) == \"$logits_a\""
stop_server || fail "server did not stop"
[ "$STOP_RC" = 0 ] && ok "clean exit" || fail "exit code $STOP_RC"

echo "model_reload: $fails failure(s)"
[ "$fails" -eq 0 ]
