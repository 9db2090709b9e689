#!/usr/bin/env bash
# The real ImageNet models in ../shared/models (see its README.md): they load,
# and the default Grad-CAM layer is the one the README names.
#
#   bash tests/cli/shared_models.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
#
# Exit 77 (ctest: skipped) when the shared folder is not there.
set -u
bin=$1
src=$2
shared=${3:-$src/../shared}
models=$shared/models
if [ ! -d "$models" ]; then
    echo "skipped: ../shared/models not present"
    exit 77
fi
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash" # fails, fail, ok; start_server, stop_server
trap 'cleanup_server; rm -rf "$tmp"' EXIT

# check_model FILE DEFAULT_LAYER LAYER_SHAPE(C,H,W)
check_model() {
    local file=$models/$1 want=$2 shape=$3
    if [ ! -f "$file" ]; then
        fail "$1 missing from $models"
        return
    fi
    if ! "$bin" inspect --model "$file" --json >"$tmp/out" 2>"$tmp/err"; then
        fail "$1: inspect failed: $(cat "$tmp/err")"
        return
    fi
    python3 - "$tmp/out" "$want" "$shape" "$1" <<'EOF' || fail "$1: inspect output"
import json, sys
o = json.load(open(sys.argv[1]))
want, shape, name = sys.argv[2], [int(x) for x in sys.argv[3].split(",")], sys.argv[4]
assert o["default_layer"] == want, f"default layer {o['default_layer']!r}, README says {want!r}"
d = [l for l in o["layers"] if l.get("default")]
assert len(d) == 1 and d[0]["name"] == want, d
assert d[0]["shape"] == shape, f"default layer shape {d[0]['shape']}, want {shape}"
assert o["num_classes"] == 1000, o["num_classes"]
assert o["inputs"][0]["shape"] == [1, 3, 224, 224], o["inputs"][0]["shape"]
print(f"ok:   {name}: default layer {want} {shape}, {len(o['layers'])} layers, {o['nodes']} nodes")
EOF
}

check_model mobilenetv2-fp32.onnx 627 1280,7,7
check_model shufflenet-v2-fp32.onnx 610 1024,7,7

# The darknet photos (Debian package darknet) through the whole CLI path
# (decode, torchvision-style preprocessing, forward): top-1 as
# ../shared/models/expected.json lists it; and explain runs on them.
photos=/usr/share/darknet/data
if [ -d "$photos" ] && [ -f "$models/expected.json" ]; then
    python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))
for model, cases in e["top1"].items():
    for photo, label in cases.items():
        print(model + "\t" + photo + "\t" + label)
' "$models/expected.json" >"$tmp/cases"
    # fp32, and bf16 where this CPU computes it natively (the cases have a
    # clear margin; bf16 moves the scores by ~0.01)
    precs=fp32
    grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && precs="fp32 bf16"
    for prec in $precs; do
        while IFS=$'\t' read -r model photo label; do
            if ! "$bin" classify --model "$models/$model" --labels "$models/imagenet_labels.txt" \
                    --image "$photos/$photo" --topk 1 --json --precision "$prec" >"$tmp/c" 2>"$tmp/err"; then
                fail "$model $photo $prec: classify failed: $(cat "$tmp/err")"
                continue
            fi
            got=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["predictions"][0]["label"])' "$tmp/c")
            if [ "$got" = "$label" ]; then echo "ok:   $model $photo $prec -> $got"
            else fail "$model $photo $prec: top-1 '$got', expected '$label'"; fi
        done <"$tmp/cases"
    done
    if "$bin" explain --model "$models/mobilenetv2-fp32.onnx" --labels "$models/imagenet_labels.txt" \
            --image "$photos/dog.jpg" --out "$tmp/cams" --json >"$tmp/e" 2>"$tmp/err" &&
       [ -s "$tmp/cams/dog.overlay.png" ] && grep -q '"class_index":249' "$tmp/e"; then
        echo "ok:   explain mobilenetv2 dog.jpg -> malamute, overlay written"
    else
        fail "explain mobilenetv2 dog.jpg: $(cat "$tmp/err")"
    fi
    # ScoreCAM and AblationCAM hand the model 16 and 32 inputs at a time;
    # these models fix their batch at 1 (until the eleventh session both
    # methods failed on them with "has a fixed batch of 1; got 16").  Their
    # maps must put the malamute where Grad-CAM does (0.96 and 0.99 here).
    for meth in gradcam scorecam ablationcam; do
        "$bin" explain --model "$models/mobilenetv2-fp32.onnx" --image "$photos/dog.jpg" --method $meth \
            --cam-size layer --save-cam "$tmp/$meth.npy" >/dev/null 2>"$tmp/err" ||
            fail "explain --method $meth mobilenetv2 dog.jpg: $(cat "$tmp/err")"
    done
    python3 - "$tmp" <<'EOF' || fail "scorecam/ablationcam maps do not agree with gradcam's"
import array, sys
def load(p):
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[8:10], "little")
    assert b"(1, 7, 7)" in raw[10:10 + n], raw[:10 + n]
    return array.array("f", raw[10 + n:])
def corr(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / (va * vb) ** 0.5
g = load(sys.argv[1] + "/gradcam.npy")
for meth in ("scorecam", "ablationcam"):
    r = corr(g, load(sys.argv[1] + "/" + meth + ".npy"))
    assert r >= 0.8, (meth, r)
    print(f"ok:   {meth} mobilenetv2 dog.jpg: correlation with gradcam {r:.3f}")
EOF
else
    echo "note: $photos or expected.json absent; photo checks skipped"
fi

# ---- serve: a shutdown does not wait for a long ScoreCAM ----
# ScoreCAM with aug_smooth on MobileNetV2 is 6 x 1280 forward passes, most
# of a minute on 2 cores.  SIGTERM 1 s into it: serve promises to exit
# within 10 s (7 s of drain, then the run is stopped at its next forward
# run), and the client gets 503 rather than nothing.  A sanitizer build's
# forward runs are slower: there the exit may take up to 30 s.
if [ -f "$photos/dog.jpg" ] && command -v curl >/dev/null 2>&1 \
    && start_server stop --model "$models/mobilenetv2-fp32.onnx" --workers 1 --timeout-ms 600000; then
    curl -s --max-time 60 -o "$tmp/stop.body" -w '%{http_code}' -H "Content-Type: image/jpeg" \
        --data-binary @"$photos/dog.jpg" "$BASE/v1/explain?method=scorecam&aug_smooth=1" >"$tmp/stop.code" &
    cpid=$!
    sleep 1
    limit=10
    grep -qaE '__(a|t)san_init' "$bin" && limit=30
    t0=$(date +%s%N)
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 $((limit * 10))); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    took=$(( ($(date +%s%N) - t0) / 1000000 ))
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        fail "SIGTERM during a ScoreCAM: still running after $limit s"
        cleanup_server
    else
        wait "$SERVER_PID"
        rc=$?
        SERVER_PID=
        check_log
        [ "$rc" = 0 ] && ok "SIGTERM during a ScoreCAM: exit 0 after $took ms (limit $limit s)" \
            || fail "SIGTERM during a ScoreCAM: exit $rc"
    fi
    wait "$cpid"
    [ "$(cat "$tmp/stop.code")" = 503 ] && grep -q "shutting down" "$tmp/stop.body" \
        && ok "its client got 503: $(cat "$tmp/stop.body")" \
        || fail "the ScoreCAM's client got $(cat "$tmp/stop.code"): $(head -c 200 "$tmp/stop.body")"
fi

if [ "$fails" -ne 0 ]; then
    echo "shared_models: $fails check(s) failed"
    exit 1
fi
echo "shared_models: all checks passed"
