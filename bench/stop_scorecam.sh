#!/bin/bash
# How long `camserve serve` takes to exit on SIGTERM while a long ScoreCAM
# (or AblationCAM) runs, and what its client gets.  serve promises to exit
# within 10 s (7 s of drain, then 2 s for the answers to go out).
#
#   bash bench/stop_scorecam.sh BIN MODEL.onnx PHOTO [METHOD] [PORT]
#
# Use a model whose ScoreCAM takes well over 10 s, e.g. ResNet-50 from
# `/usr/bin/python3 bench/export_models.py DIR --models resnet50` and
# /usr/share/darknet/data/dog.jpg.  Prints one line: seconds from SIGTERM
# to exit, the client's status, seconds from request to exit, the body's start.
set -u
bin=$1 model=$2 photo=$3 method=${4:-scorecam} port=${5:-18091}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" serve --host 127.0.0.1 --port "$port" --model "$model" --workers 1 --timeout-ms 600000 2>"$tmp/log" &
pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
t0=$(date +%s.%N)
curl -s -o "$tmp/body" -w '%{http_code}' -H "Content-Type: image/jpeg" --data-binary @"$photo" \
    "http://127.0.0.1:$port/v1/explain?method=$method" >"$tmp/code" &
cpid=$!
sleep 2
ts=$(date +%s.%N)
kill -TERM "$pid"
wait "$pid"
te=$(date +%s.%N)
wait "$cpid"
printf 'exit %.1f s after SIGTERM; the client got %s, %.1f s after its request: %s\n' \
    "$(echo "$te - $ts" | bc)" "$(cat "$tmp/code")" "$(echo "$te - $t0" | bc)" "$(head -c 120 "$tmp/body")"
