#!/usr/bin/env bash
# `camserve serve` under bad input and pressure, on 127.0.0.1: non-image and
# corrupt bodies (415), oversized bodies (413, by Content-Length and
# chunked), malformed multipart and JSON (400), unknown model / method /
# layer / class (400 naming the valid choices), 404 / 405, slow clients that
# stall mid-request, clients that vanish mid-upload, a full queue (503 +
# Retry-After), the per-request timeout (504, also for a run that goes on
# past it), and SIGTERM / SIGINT while
# busy (exit within 10 s).
#
#   bash tests/cli/server_errors.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
model=$src/tests/golden/resnet_basic/model.onnx
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
slow_pids=()
trap 'for p in "${slow_pids[@]}"; do kill "$p" 2>/dev/null; done; cleanup_server; rm -rf "$tmp"' EXIT
need_tools

png=$src/tests/data/images/resize_src.png
photo=$(photo_image)
printf 'this is not an image\n' >"$tmp/text.txt"
head -c 300 "$src/tests/data/images/orient_1.jpg" >"$tmp/truncated.jpg"
head -c $((2 * 1024 * 1024 + 17)) /dev/zero >"$tmp/big.bin"

start_server errors --model "$model:golden" --max-upload-mb 1 --idle-timeout-s 5 || exit 1

# ---- bodies that are not images ----
req "text body" 415 -H "Content-Type: text/plain" --data-binary @"$tmp/text.txt" "$BASE/v1/explain" \
    && jcheck "415 says invalid image" '.error | test("^invalid image")'
req "truncated JPEG" 415 -H "Content-Type: image/jpeg" --data-binary @"$tmp/truncated.jpg" "$BASE/v1/explain" \
    && jcheck "truncated: invalid image" '.error | test("invalid image")'
req "classify text body" 415 -H "Content-Type: image/png" --data-binary @"$tmp/text.txt" "$BASE/v1/classify"
req "empty body" 400 -X POST -H "Content-Type: image/png" "$BASE/v1/explain"

# ---- sizes ----
req "oversized (Content-Length)" 413 -H "Content-Type: image/jpeg" --data-binary @"$tmp/big.bin" "$BASE/v1/explain" \
    && jcheck "413 names the limit" '.error | test("too large")'
req "oversized (chunked)" 413 -H "Content-Type: image/jpeg" -H "Transfer-Encoding: chunked" \
    --data-binary @"$tmp/big.bin" "$BASE/v1/explain"
req "oversized multipart" 413 -F "image=@$tmp/big.bin;type=image/jpeg" "$BASE/v1/explain"

# ---- malformed requests ----
req "malformed multipart" 400 -H "Content-Type: multipart/form-data; boundary=XyZ" \
    --data-binary $'--XyZ\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc' "$BASE/v1/explain" \
    && jcheck "says multipart" '.error | test("multipart")'
req "multipart part without a name" 400 -H "Content-Type: multipart/form-data; boundary=XyZ" \
    --data-binary $'--XyZ\r\nContent-Type: image/png\r\n\r\nabc\r\n--XyZ--\r\n' "$BASE/v1/explain" \
    && jcheck "says the part has no name" '.error | test("without a name")'
req "multipart without boundary" 400 -H "Content-Type: multipart/form-data" --data-binary "xx" "$BASE/v1/explain"
req "multipart without image" 400 -F method=gradcam "$BASE/v1/explain" && jcheck "names the field" '.error | test("image")'
req "malformed JSON" 400 -H "Content-Type: application/json" -d '{"image_id": ' "$BASE/v1/explain" \
    && jcheck "says JSON" '.error | test("JSON")'
req "JSON without image_id" 400 -H "Content-Type: application/json" -d '{"method": "gradcam"}' "$BASE/v1/explain"
req "bad image_id" 400 -H "Content-Type: application/json" -d '{"image_id": "xyz"}' "$BASE/v1/explain"
req "unknown image_id" 404 -H "Content-Type: application/json" \
    -d '{"image_id": "0000000000000000000000000000000000000000000000000000000000000000"}' "$BASE/v1/explain" \
    && jcheck "404 says upload again" '.error | test("upload")'

# ---- unknown choices: 400 naming the valid ones ----
P=(-H "Content-Type: image/png" --data-binary @"$png")
req "unknown method" 400 "${P[@]}" "$BASE/v1/explain?method=fancycam" \
    && jcheck "lists the methods" '.error | test("fancycam") and test("gradcam") and test("scorecam")'
req "unknown layer" 400 "${P[@]}" "$BASE/v1/explain?layer=nope" \
    && jcheck "lists the layers" '.error | test("nope") and test("layer4")'
req "class out of range" 400 "${P[@]}" "$BASE/v1/explain?class=99" && jcheck "names 0..9" '.error | test("0\\.\\.9")'
req "class not a number, no labels" 400 "${P[@]}" "$BASE/v1/explain?class=dog" \
    && jcheck "says top or index, and why not a label" '.error | test("top") and test("the model has no labels")'
req "unknown model" 400 "${P[@]}" "$BASE/v1/explain?model=resnet9000" \
    && jcheck "lists the models" '.error | test("resnet9000") and test("golden")'
req "unknown colormap" 400 "${P[@]}" "$BASE/v1/explain?colormap=rainbow" && jcheck "lists colormaps" '.error | test("jet")'
req "alpha out of range" 400 "${P[@]}" "$BASE/v1/explain?alpha=3"
req "topk out of range" 400 "${P[@]}" "$BASE/v1/explain?topk=0"
req "unknown format" 400 "${P[@]}" "$BASE/v1/explain?format=gif"

# ---- routing ----
req "unknown path" 404 "$BASE/v2/nothing"
req "GET on explain" 405 "$BASE/v1/explain" && grep -qi "^allow: POST" "$tmp/headers" && ok "Allow header" || fail "Allow header"
req "POST on healthz" 405 -X POST "$BASE/healthz"
req "still healthy" 200 "$BASE/healthz"

# ---- slow clients stall mid-request; others are served meanwhile ----
# three raw sockets: half a request line, headers without the blank line,
# and a body cut short of its Content-Length
exec 5<>/dev/tcp/127.0.0.1/"$PORT" 6<>/dev/tcp/127.0.0.1/"$PORT" 7<>/dev/tcp/127.0.0.1/"$PORT"
printf 'POST /v1/expl' >&5
printf 'POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n' >&6
printf 'POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG' >&7
t0=$(date +%s%N)
req "healthz while 3 clients stall" 200 --max-time 3 "$BASE/healthz"
req "explain while 3 clients stall" 200 --max-time 10 "${P[@]}" "$BASE/v1/explain?class=1"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 5000 ] && ok "served in ${ms} ms despite stalled clients" || fail "stalled clients slowed others: ${ms} ms"
# the connection timeout (5 s here) drops the stalled clients
sleep 6
req "healthz after the idle timeout" 200 --max-time 3 "$BASE/healthz"
exec 5>&- 6>&- 7>&-

# ---- clients that half-close (shutdown(SHUT_WR)) after their request ----
# Each must get its whole answer and then the end of the connection.
# libmicrohttpd runs in epoll mode, where a request answered by a worker
# (suspend/resume) to such a client left the connection open until
# --idle-timeout-s (most POSTs: bench/half_close.py counts them) unless the
# answer says "Connection: close", as it does since the eleventh session.  (About
# once in 30,000 fuzz_http inputs such a request is not handed over at all
# until another connection arrives: docs/architecture.md.)
python3 - "$PORT" "$png" <<'PY' && ok "30 half-closing clients: every answer whole, every connection closed" ||
import socket, sys, time
port, png = int(sys.argv[1]), open(sys.argv[2], "rb").read()
reqs = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /v1/classify?topk=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(png) + png]
bad = []
for i in range(30):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(3)
    s.sendall(reqs[i % 3])
    s.shutdown(socket.SHUT_WR)
    data, t0 = b"", time.time()
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except socket.timeout:
        bad.append(f"request {i % 3}: no end of connection after 3 s ({len(data)} bytes in)")
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    want = [b"200", b"415", b"200"][i % 3]
    if not head.startswith(b"HTTP/1.1 " + want):
        bad.append(f"request {i % 3}: {head[:40]!r}")
for b in bad:
    print("   ", b)
sys.exit(1 if bad else 0)
PY
    fail "half-closing clients (above)"

# ---- a client that vanishes mid-upload ----
head -c $((900 * 1024)) /dev/urandom >"$tmp/rand.bin"
curl -s -o /dev/null --max-time 1 --limit-rate 100k -H "Content-Type: image/jpeg" \
    --data-binary @"$tmp/rand.bin" "$BASE/v1/explain"
[ $? -eq 28 ] && ok "client gave up mid-upload" || fail "the slow upload did not time out on the client side"
req "served after a vanished client" 200 "${P[@]}" "$BASE/v1/explain?class=2"
active=$(curl -s "$BASE/metrics" | grep -E '^camserve_http_active_requests ' | awk '{print $2}')
[ "${active:-9}" -le 1 ] && ok "no request left behind (active $active)" || fail "active requests: $active"
stop_server TERM && [ "$STOP_RC" = 0 ] && ok "SIGTERM idle: exit 0 in ${STOP_SECONDS}s" || fail "SIGTERM (rc ${STOP_RC:-none})"

# stall_upload LEN: on fd 8, a POST announcing LEN bytes that sends 300 KB
# and stalls (closed with exec 8>&-)
stall_upload() {
    exec 8<>/dev/tcp/127.0.0.1/"$PORT"
    printf 'POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n' "$1" >&8
    head -c 300000 /dev/zero >&8
    sleep 0.3
}

# ---- request bodies are bounded all together (--max-inflight-mb) ----
# one client announces 900 KB and stalls after 300 KB: its reservation
# leaves too little of a 1 MB budget for a 400 KB upload, which gets 503
# at once; when the staller leaves, the same upload goes through
if start_server inflight --model "$model" --max-upload-mb 1 --max-inflight-mb 1; then
    head -c 400000 /dev/urandom >"$tmp/rand400k.bin"
    stall_upload 900000
    req "upload beyond the in-flight budget" 503 --max-time 10 -H "Content-Type: image/jpeg" \
        --data-binary @"$tmp/rand400k.bin" "$BASE/v1/explain" \
        && grep -qi '^retry-after: [0-9]' "$tmp/headers" && jcheck "503 says why" '.error | test("too many uploads")'
    req "small requests still served" 200 --max-time 3 "$BASE/healthz"
    exec 8>&-
    sleep 0.5
    req "the same upload once the staller left" 415 --max-time 10 -H "Content-Type: image/jpeg" \
        --data-binary @"$tmp/rand400k.bin" "$BASE/v1/explain"
    stop_server TERM
fi

# ---- an eighth of the budget is kept for small uploads ----
# a 2 MB budget, uploads up to 1 MB: large uploads may hold 2 MB less 256 KB.
# One client announces 1 MB and stalls: a second 1 MB upload no longer fits
# the large uploads' share (503), while a 200 KB upload still goes through
# (answered, here 415 for its random bytes).  Without the reserve the second
# large upload was taken (415 here too).
if start_server reserve --model "$model" --max-upload-mb 1 --max-inflight-mb 2; then
    head -c 1000000 /dev/urandom >"$tmp/rand1m.bin"
    head -c 200000 /dev/urandom >"$tmp/rand200k.bin"
    stall_upload 1000000
    req "a second large upload beyond the large uploads' share" 503 --max-time 10 -H "Content-Type: image/jpeg" \
        --data-binary @"$tmp/rand1m.bin" "$BASE/v1/explain" && jcheck "503 says why" '.error | test("too many uploads")'
    req "a small upload still taken" 415 --max-time 10 -H "Content-Type: image/jpeg" \
        --data-binary @"$tmp/rand200k.bin" "$BASE/v1/explain"
    exec 8>&-
    stop_server TERM
fi

# ---- full queue: fail fast with 503 + Retry-After ----
flood=${photo:-$png}
if start_server queue --model "$model" --workers 1 --queue 1 --max-batch 1 --batch-window-ms 0; then
    for i in $(seq 1 24); do
        curl -s --max-time 30 -o /dev/null -D "$tmp/flood.h$i" -w '%{http_code}\n' \
            -H "Content-Type: image/png" --data-binary @"$flood" "$BASE/v1/explain?alpha=0.$((i + 10))" >"$tmp/flood.$i" &
    done
    for _ in $(seq 1 150); do
        [ "$(cat "$tmp"/flood.[0-9]* 2>/dev/null | grep -c .)" -ge 24 ] && break
        sleep 0.2
    done
    codes=$(cat "$tmp"/flood.[0-9]* | sort | uniq -c | tr '\n' ' ')
    n503=$(cat "$tmp"/flood.[0-9]* | grep -c '^503$')
    n200=$(cat "$tmp"/flood.[0-9]* | grep -c '^200$')
    [ "$n503" -ge 1 ] && [ "$n200" -ge 1 ] && [ $((n503 + n200)) -eq 24 ] && ok "flood: $codes" || fail "flood: $codes"
    h=$(grep -l '^HTTP/1.1 503' "$tmp"/flood.h* | head -1)
    [ -n "$h" ] && grep -qi '^retry-after: [0-9]' "$h" && ok "503 carries Retry-After" || fail "no Retry-After on 503"
    req "served after the flood" 200 "${P[@]}" "$BASE/v1/explain?class=3"

    stop_server TERM
fi

# ---- SIGTERM while requests are in flight: they finish, then the exit ----
# a 400 ms batch window holds the four requests inside the service when the
# signal comes
if start_server drain --model "$model" --workers 1 --max-batch 8 --batch-window-ms 400; then
    for i in 1 2 3 4; do
        curl -s --max-time 30 -o /dev/null -w '%{http_code}\n' -H "Content-Type: image/png" \
            --data-binary @"$png" "$BASE/v1/explain?alpha=0.0$i" >"$tmp/term.$i" &
    done
    sleep 0.2
    stop_server TERM && [ "$STOP_RC" = 0 ] && ok "SIGTERM busy: exit 0 in ${STOP_SECONDS}s (< 10 s)" \
        || fail "SIGTERM busy (rc ${STOP_RC:-none})"
    wait
    codes=$(cat "$tmp"/term.* | sort | uniq -c | tr '\n' ' ')
    [ "$(grep -c '^200$' "$tmp"/term.* | awk -F: '{s += $2} END {print s}')" -eq 4 ] \
        && ok "in flight at SIGTERM, all answered: $codes" || fail "in flight at SIGTERM: $codes"
fi

# ---- per-request timeout: 504 ----
if [ -n "$photo" ] && start_server timeout --model "$model" --timeout-ms 1 --batch-window-ms 0; then
    req "timeout 1 ms" 504 -H "Content-Type: image/jpeg" --data-binary @"$photo" "$BASE/v1/explain" \
        && jcheck "504 says timed out" '.error | test("timed out")'
    stop_server INT && [ "$STOP_RC" = 0 ] && ok "SIGINT: exit 0 in ${STOP_SECONDS}s" || fail "SIGINT (rc ${STOP_RC:-none})"
fi

# ---- a run past its timeout is stopped: 504; the next of its kind is refused at once ----
# ScoreCAM with aug_smooth on the default model is 6 x 128 forward passes
# of the whole network, about 1.5 s on one thread here (more under the
# sanitizers).  Two identical requests (the second waits for the first)
# reach the worker within the 600 ms timeout; it must stop the run at its
# next forward run past the deadline, not finish it for nobody, and both
# get 504.  (Under a loaded machine the worker may take them only after the
# deadline: then the run is stopped before its first forward run, which
# the message says.)  A stopped run that got going leaves an estimate of
# its whole length, well past the timeout, so the next ScoreCAM of that
# kind -- another image, same method, layer and aug_smooth -- is refused
# before it runs, with what it would take; a ScoreCAM of another kind is
# not.  The worker then serves the next request from the same session.
# The twins' run is usually stopped before the deadline: once a tenth of
# its time has shown a pace that cannot end in time (early_re); under a
# loaded machine it may only be stopped at the deadline (stopped_re).
stopped_re='^timed out: scorecam ran past the 600 ms request timeout \\(--timeout-ms\\) and was stopped ([0-9.]+ s in, [0-9]+% of its forward passes done; all of them would take about [0-9.]+ s at this pace|before its forward passes began)$'
early_re='^timed out: scorecam would run past the 600 ms request timeout \\(--timeout-ms\\), so it was stopped [0-9.]+ s in, [0-9]+% of its forward passes done; all of them would take about [0-9.]+ s at this pace; use a faster method .* or raise --timeout-ms$'
# early_check WHAT MIN: a run stopped for its pace was stopped before the
# 600 ms deadline, and its projected whole is over MIN seconds (the timeout
# itself for the twins; for a shorter run, what it had run: the deadline
# counts from the request, the run began later).  The message gives
# tenths of a second: a stop from 0.55 s to just before the deadline reads
# "0.6 s in" (one under ThreadSanitizer did), so 0.6 passes.
early_check() {
    jcheck "stopped early: before the deadline, $1" \
        ".error | capture(\"stopped (?<in>[0-9.]+) s in.*would take about (?<all>[0-9.]+) s\") | (.in | tonumber) <= 0.6 and (.all | tonumber) > ${2:-(.in | tonumber)}"
}
if start_server cancel --timeout-ms 600 --threads 1 --batch-window-ms 0; then
    curl -s --max-time 30 --parallel --parallel-immediate -w '%{http_code}\n' -o "$tmp/twin1" -o "$tmp/twin2" \
        -H "Content-Type: image/png" \
        --data-binary @"$png" "$BASE/v1/explain?method=scorecam&aug_smooth=1&alpha=0.4" \
        "$BASE/v1/explain?method=scorecam&aug_smooth=1&alpha=0.4" >"$tmp/twins.codes" 2>/dev/null
    [ "$(grep -c '^504$' "$tmp/twins.codes")" = 2 ] && ok "two identical requests past the timeout: both 504" \
        || fail "two identical requests past the timeout: $(tr '\n' ' ' <"$tmp/twins.codes")"
    cp "$tmp/twin1" "$tmp/body"
    jcheck "504 says it was stopped, how far it got and how long all would take" \
        ".error | test(\"$stopped_re\") or test(\"$early_re\")"
    # A run that got well into its forward passes before the deadline had
    # its pace judged many times, a whole run (about 1.3 s here) well past
    # 1.2 x 600 ms: it must have been stopped for it.  Only a build too slow
    # to get going before the deadline may reach it (ThreadSanitizer's).
    pct=$(jq -r '.error | capture("ran past.* (?<p>[0-9]+)% of its forward") | .p' "$tmp/body" 2>/dev/null)
    if jq -e '.error | test("would run past")' "$tmp/body" >/dev/null 2>&1; then
        early_check "and its whole run would take longer than the timeout" 0.6
    elif [ -n "$pct" ] && [ "$pct" -ge 15 ]; then
        fail "the run reached its deadline with $pct% of its forward passes done: its pace should have stopped it before"
    else
        echo "  (stopped at the deadline, ${pct:-0}% done: too few forward runs before it to judge the pace)"
    fi
    # the estimate the stopped run left, in ms; empty when it never began
    whole=$(jq -r '.error | capture("would take about (?<s>[0-9.]+) s") | .s' "$tmp/twin1" 2>/dev/null \
        | awk '{ printf "%d", $1 * 1000 }')
    req "another image, the same kind of ScoreCAM" 504 -H "Content-Type: image/jpeg" --data-binary @"$photo" \
        "$BASE/v1/explain?method=scorecam&aug_smooth=1"
    # The service refuses past 1.2 x 600 = 720 ms; the message rounds the
    # estimate to 0.1 s, so near 720 either answer is right.
    refused_re='^timed out before it ran: scorecam with these layers and options would take about [0-9.]+ s per image on this server \\(measured [0-9]+ s ago\\), more than the 600 ms request timeout \\(--timeout-ms\\); use a faster method .* or raise --timeout-ms; such a request is tried again 10 min after that measurement$'
    if [ -n "$whole" ] && [ "$whole" -gt 800 ]; then
        jcheck "refused before it ran (estimate ${whole} ms > 1.2 x 600), with what it would take and what to do" \
            ".error | test(\"$refused_re\")"
    elif [ -n "$whole" ] && [ "$whole" -gt 650 ]; then
        jcheck "refused before it ran or stopped (estimate ${whole} ms, about 1.2 x 600)" \
            ".error | test(\"$refused_re\") or test(\"$stopped_re\") or test(\"$early_re\")"
    else
        echo "  (the stopped run left no estimate past 1.2 x 600 ms ('${whole}'): so this one runs and is stopped)"
        jcheck "stopped like the first" ".error | test(\"$stopped_re\") or test(\"$early_re\")"
    fi
    CODE=$(curl -s --max-time 30 -o "$tmp/body" -w '%{http_code}' -H "Content-Type: image/png" \
        --data-binary @"$png" "$BASE/v1/explain?method=scorecam")
    # a sixth of the twins' work: it should end in time, and if this build
    # is too slow for that, a stop for its pace must be a true one
    if [ "$CODE" = 200 ] || jq -e '.error | test("ran past")' "$tmp/body" >/dev/null 2>&1; then
        ok "a ScoreCAM of another kind (no aug_smooth) runs (HTTP $CODE)"
    elif jq -e '.error | test("would run past")' "$tmp/body" >/dev/null 2>&1; then
        early_check "with more of it left to run (this build is too slow for it)"
    else
        fail "a ScoreCAM without aug_smooth: HTTP $CODE, want 200 or a run stopped at the timeout: $(head -c 300 "$tmp/body")"
    fi
    req "then a GradCAM on the same worker" 200 -H "Content-Type: image/png" --data-binary @"$png" "$BASE/v1/explain" \
        && jcheck "it explains" '.predictions | length == 5'
    curl -s --max-time 5 "$BASE/metrics" >"$tmp/cancel.prom"
    coalesced=$(awk '/^camserve_cache_coalesced_total / { print $2 }' "$tmp/cancel.prom")
    [ "${coalesced:-0}" -ge 1 ] && ok "the second of the two waited for the first ($coalesced coalesced)" \
        || fail "the two identical requests were not coalesced: the check above proves less"
    stopped=$(awk '/^camserve_runs_stopped_total\{reason="timeout"\}/ { print $2 }' "$tmp/cancel.prom")
    [ "${stopped:-0}" -ge 1 ] && ok "/metrics counts the stopped runs ($stopped)" \
        || fail "camserve_runs_stopped_total{reason=\"timeout\"} is '${stopped}', want >= 1"
    if [ -n "$whole" ] && [ "$whole" -gt 800 ]; then
        refused=$(awk '/^camserve_service_rejected_total\{reason="timeout"\}/ { print $2 }' "$tmp/cancel.prom")
        [ "${refused:-0}" -ge 1 ] && ok "/metrics counts the refusal ($refused rejected for timeout)" \
            || fail "camserve_service_rejected_total{reason=\"timeout\"} is '${refused}', want >= 1"
    fi
    stop_server TERM && [ "$STOP_RC" = 0 ] && ok "stopped" || fail "stop after the cancelled runs (rc ${STOP_RC:-none})"
fi

# ---- a client that goes away stops its run ----
# A ScoreCAM with aug_smooth (about 1.3 s here, far more under the
# sanitizers) under a 60 s timeout: its client closes the connection 0.3 s
# in.  Nobody else waits for the run, so the worker stops it at its next
# forward run and is free for the next request, instead of running it to
# the end for nobody.  A client that half-closes after such a request
# cannot be told from one that closed (both read end-of-file, as nginx
# treats them): it gets 499 with the reason -- here, as it half-closes
# right after sending, before a worker takes the request, which is then
# never run.  (A half-closer of a request without such a run is answered
# in full: the block above.)
if start_server gone --timeout-ms 60000 --threads 1 --batch-window-ms 0 --max-batch 2; then
    python3 - "$PORT" "$png" <<'PY' && ok "closed during a ScoreCAM run: the run was stopped, the worker answers the next request" ||
import json, socket, sys, time, urllib.request
port, png = int(sys.argv[1]), open(sys.argv[2], "rb").read()
def post(query):
    return (f"POST /v1/explain?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(png)}\r\n\r\n").encode() + png
def stopped():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('camserve_runs_stopped_total{reason="client_gone"}'):
            return int(line.split()[1])
    return None
s = socket.create_connection(("127.0.0.1", port))
s.sendall(post("method=scorecam&aug_smooth=1"))
time.sleep(0.3)
s.close()
t0 = time.time()
n = stopped()
while n == 0 and time.time() - t0 < 20:
    time.sleep(0.05)
    n = stopped()
if n != 1:
    print(f"    camserve_runs_stopped_total{{reason=\"client_gone\"}} is {n} {time.time() - t0:.1f} s after the close, want 1")
    sys.exit(1)
print(f"    (stopped {time.time() - t0:.2f} s after the close)")
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/explain", data=png, headers={"Content-Type": "image/png"})
r = json.load(urllib.request.urlopen(req, timeout=20))
sys.exit(0 if len(r["predictions"]) == 5 else 1)
PY
        fail "a client closed during a ScoreCAM run (above)"
    python3 - "$PORT" "$png" <<'PY' && ok "half-closed after a ScoreCAM request: 499, the client is taken as gone" ||
import socket, sys
port, png = int(sys.argv[1]), open(sys.argv[2], "rb").read()
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(60)
s.sendall((f"POST /v1/explain?method=scorecam&aug_smooth=1&alpha=0.3 HTTP/1.1\r\nHost: x\r\n"
           f"Content-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n").encode() + png)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    data += c
head, _, body = data.partition(b"\r\n\r\n")
# taken as gone before a worker took it (so never run), or during the run
want = b'{"error":"client gone: the connection was closed '
if head.startswith(b"HTTP/1.1 499") and body.startswith(want):
    sys.exit(0)
print("   ", head[:40], body[:200])
sys.exit(1)
PY
        fail "a half-closed ScoreCAM request (above)"
    # Two ScoreCAMs of one kind queued behind a third, the second's client
    # closing while they wait: the worker takes the first and would batch
    # the second with it (--max-batch 2); it drops the second unrun
    # (camserve_runs_skipped_total) instead of computing it for nobody in
    # the batch.  (A lone request dropped the same way: the half-closer
    # above.)
    python3 - "$PORT" "$png" <<'PY' && ok "closed while its ScoreCAM waited to be batched: dropped unrun, the other answered" ||
import socket, sys, threading, time, urllib.request
port, png = int(sys.argv[1]), open(sys.argv[2], "rb").read()
def metric(name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return None
STOPPED = 'camserve_runs_stopped_total{reason="client_gone"}'
stopped0, skipped0 = metric(STOPPED), metric("camserve_runs_skipped_total")
codes = {}
def explain(alpha):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/explain?method=scorecam&aug_smooth=1&alpha={alpha}",
                                 data=png, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=60) as r:
        codes[alpha] = r.status
running = threading.Thread(target=explain, args=("0.6",))
running.start()
time.sleep(0.1)
kept = threading.Thread(target=explain, args=("0.5",))
kept.start()
time.sleep(0.1)
s = socket.create_connection(("127.0.0.1", port))
s.sendall((f"POST /v1/explain?method=scorecam&aug_smooth=1&alpha=0.4 HTTP/1.1\r\nHost: x\r\n"
           f"Content-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n").encode() + png)
time.sleep(0.2)
s.close()
running.join()
kept.join()
t = time.time()
skipped = metric("camserve_runs_skipped_total")
while skipped == skipped0 and time.time() - t < 10:
    time.sleep(0.05)
    skipped = metric("camserve_runs_skipped_total")
stopped = metric(STOPPED)
if codes != {"0.6": 200, "0.5": 200} or skipped != skipped0 + 1 or stopped != stopped0:
    print(f"    answers {codes} (want 200 for both kept), runs skipped {skipped0} -> {skipped} (want one more), "
          f"runs stopped for gone clients {stopped0} -> {stopped} (want no change)")
    sys.exit(1)
PY
        fail "a ScoreCAM whose client closed while it was queued (above)"
    curl -s --max-time 5 "$BASE/metrics" >"$tmp/gone.prom"
    gone=$(awk '/^camserve_service_requests_total\{outcome="client_gone"\}/ { print $2 }' "$tmp/gone.prom")
    [ "${gone:-0}" -ge 3 ] && ok "/metrics counts the three requests as client_gone ($gone)" \
        || fail "camserve_service_requests_total{outcome=\"client_gone\"} is '${gone}', want >= 3"
    stop_server TERM && [ "$STOP_RC" = 0 ] && ok "stopped" || fail "stop after the clients that went (rc ${STOP_RC:-none})"
fi

echo "server_errors: $fails failure(s)"
[ "$fails" -eq 0 ]
