#!/usr/bin/env bash
# Result-cache hit latency, server side: the `timings_ms.total` of the answer
# (from the request's first byte at the server to the answer queued, so a
# re-upload includes receiving and SHA-256-hashing the body).
#
#   bench/cache.sh [CAMSERVE_BIN] [MODEL.onnx]     (default: build/camserve, the embedded model)
#   RUNS=50 bench/cache.sh ...
#
# Prints, as median / p90 over RUNS requests on one `serve` on 127.0.0.1:
#   memory hit, image_id request (JSON body, no upload)
#   memory hit, re-upload of a ~3 MB photo (procedural 4000x3000 q92 JPEG, as bench_image.sh),
#     a new curl each time, then all on one kept-alive connection
#   disk (LMDB) hit after a restart, image_id request
#   the miss that computed the answer, for scale, and a new method for the same
#   photo (decode + preprocessing skipped by the prep cache)
# Needs curl, jq, gcc + pkg-config (to make the photo with bench_image.c).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/camserve}
model=${2:-}
runs=${RUNS:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/camserve-bench-cache.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$work"' EXIT

sh "$root/bench/build_bench_image.sh" "$work/bench_image"
"$work/bench_image" --make "$work/photo.jpg" >/dev/null
photo=$work/photo.jpg
bytes=$(stat -c %s "$photo")
id=$(sha256sum "$photo" | cut -d' ' -f1)

model_args=()
[ -n "$model" ] && model_args=(--model "$model")
serve() { # serve LOG ARGS...
    local log=$1
    shift
    "$bin" serve --host 127.0.0.1 --port 0 "${model_args[@]}" "$@" >"$log" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 1 600); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log" | head -1)
        [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    echo "server did not start: $(cat "$log")" >&2
    exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# Each request runs alone and its answer is read from a file afterwards: a
# jq started beside curl (a pipe) would spend its start-up CPU during the
# upload, inside the server's clock (2 cores; ~1.5 ms on a re-upload).
upload() { # upload QUERY: the answer in $work/answer.json
    curl -s --max-time 60 -o "$work/answer.json" -H 'Content-Type: image/jpeg' --data-binary @"$photo" \
        "$base/v1/explain?$1"
}
by_id() { # by_id ALPHA: the answer in $work/answer.json
    curl -s --max-time 60 -o "$work/answer.json" -H 'Content-Type: application/json' \
        -d "{\"image_id\": \"$id\", \"alpha\": $1}" "$base/v1/explain"
}
answer() { jq -r "$1" "$work/answer.json"; }
# stats NAME < "cache total" lines: median and p90 of the totals, all must be hits
stats() {
    sort -k2 -g | awk -v name="$1" '
        { if ($1 != "hit") bad++; v[NR] = $2 }
        END { m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.9 + 0.999)]
              printf "%-46s median %7.3f ms   p90 %7.3f ms   (n=%d%s)\n", name, m, p, NR,
                     bad ? ", " bad " NOT hits" : "" }'
}

serve "$work/mem.log" --cache-dir "$work/cache"
base=http://127.0.0.1:$port
upload "alpha=0.5"
first=$(answer '.timings_ms | "\(.decode + .preprocess) \(.total)"')
echo "camserve $("$bin" version | head -1 | cut -d' ' -f2), photo $bytes bytes, $runs runs each, $(nproc) cores"
echo "computing miss: total ${first#* } ms, of which decode + preprocess ${first% *} ms"
# the prep cache: other methods / classes for the same image skip decode + preprocess
for m in gradcam++ layercam hirescam xgradcam; do
    upload "method=$m&alpha=0.5"
    answer '.timings_ms | "\(.decode + .preprocess) \(.total)"'
done | awk '{ d += $1; t += $2; n++ } END {
    printf "another method, same photo (prep cache): decode + preprocess %.3f ms, total %.1f ms (mean of %d)\n", d / n, t / n, n }'
for _ in $(seq 1 5); do upload "alpha=0.5" >/dev/null; by_id 0.5 >/dev/null; done # warm up
for _ in $(seq 1 "$runs"); do
    by_id 0.5
    answer '"\(.cache) \(.timings_ms.total)"'
done >"$work/t.txt"
stats "memory hit, image_id request" <"$work/t.txt"
for _ in $(seq 1 "$runs"); do
    upload "alpha=0.5"
    answer '"\(.cache) \(.timings_ms.total)"'
done >"$work/t.txt"
stats "memory hit, re-upload of the $((bytes / 1048576)).$((bytes % 1048576 * 10 / 1048576)) MB photo" <"$work/t.txt"
# the same on one kept-alive connection (what a browser does): one curl, many
# URLs; no connection set-up or Expect: 100-continue round trip per upload
urls=()
for i in $(seq 1 "$runs"); do urls+=(-o "$work/kept.$i.json" "$base/v1/explain?alpha=0.5"); done
curl -s --max-time 120 -H 'Content-Type: image/jpeg' -H 'Expect:' --data-binary @"$photo" "${urls[@]}"
for i in $(seq 1 "$runs"); do jq -r '"\(.cache) \(.timings_ms.total)"' "$work/kept.$i.json"; done \
    | stats "memory hit, re-upload, kept-alive connection"
# distinct answers to read back from disk after a restart
for i in $(seq 1 "$runs"); do by_id "0.$((100 + i))" >/dev/null; done
stop
serve "$work/disk.log" --cache-dir "$work/cache"
base=http://127.0.0.1:$port
for i in $(seq 1 "$runs"); do
    by_id "0.$((100 + i))"
    answer '"\(.cache) \(.timings_ms.total)"'
done >"$work/t.txt"
stats "disk hit after a restart, image_id request" <"$work/t.txt"
stop
