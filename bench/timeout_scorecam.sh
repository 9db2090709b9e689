#!/bin/bash
# What a ScoreCAM (or AblationCAM) that cannot end within --timeout-ms
# costs the server: the first request of its kind is stopped once its pace
# shows it (504), the next of that kind is refused before it runs (504).
# Prints, per request, the seconds the client waited, the status and the
# message.
#
#   bash bench/timeout_scorecam.sh BIN MODEL.onnx PHOTO1 PHOTO2 [TIMEOUT_MS] [METHOD] [PORT]
#
# e.g. ResNet-50 from `/usr/bin/python3 bench/export_models.py DIR --models
# resnet50`, darknet's dog.jpg and eagle.jpg, the default 30000 ms timeout.
set -u
bin=$1 model=$2 p1=$3 p2=$4 timeout=${5:-30000} method=${6:-scorecam} port=${7:-18092}
tmp=$(mktemp -d)
"$bin" serve --host 127.0.0.1 --port "$port" --model "$model" --workers 1 --timeout-ms "$timeout" 2>"$tmp/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
for p in "$p1" "$p2"; do
    curl -s -o "$tmp/body" -w '%{time_total} %{http_code}' -H "Content-Type: image/jpeg" --data-binary @"$p" \
        "http://127.0.0.1:$port/v1/explain?method=$method" >"$tmp/out"
    read -r secs code <"$tmp/out"
    printf '%s: %.2f s, HTTP %s: %s\n' "$(basename "$p")" "$secs" "$code" \
        "$(jq -r '.error // "explained: \(.predictions[0].label // .predictions[0].index)"' "$tmp/body" 2>/dev/null)"
done
