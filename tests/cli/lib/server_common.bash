# Shared by the server tests (tests/cli/server_*.sh, ui_e2e.sh): start a
# `camserve serve` on 127.0.0.1 with a free port, wait for it, stop it.
# Not a test itself (ctest only globs tests/cli/*.sh).
#
# Requires: $bin (the camserve binary) and $tmp (a scratch dir) set by the
# caller; curl and jq on PATH (scripts exit 77 without them).

. "$(dirname "${BASH_SOURCE[0]}")/check.bash" # fails, fail, ok, run

need_tools() {
    for t in curl jq "$@"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            echo "SKIP: $t is not installed"
            exit 77
        fi
    done
}

SERVER_PID=
PORT=
BASE=

# start_server NAME ARGS...: serve on 127.0.0.1, port chosen by the kernel
# (read back from the log), then wait up to 30 s for /readyz.  Returns 1 if
# it never got ready.
start_server() {
    local name=$1
    shift
    SERVER_LOG=$tmp/$name.log
    "$bin" serve --host 127.0.0.1 --port 0 "$@" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    PORT=
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$SERVER_LOG" | head -1)
        [ -n "$PORT" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$PORT" ]; then
        fail "$name: server did not start: $(head -c 800 "$SERVER_LOG")"
        return 1
    fi
    BASE=http://127.0.0.1:$PORT
    for _ in $(seq 1 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz")" = 200 ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "$name: server never ready: $(head -c 800 "$SERVER_LOG")"
    return 1
}

# A sanitizer build reports on the server's stderr: count that as a failure.
check_log() {
    if grep -qE 'AddressSanitizer|UndefinedBehaviorSanitizer|runtime error|LeakSanitizer|ThreadSanitizer' "$SERVER_LOG" 2>/dev/null; then
        fail "sanitizer report in $(basename "$SERVER_LOG")"
        grep -E -A24 'AddressSanitizer|runtime error|LeakSanitizer|ThreadSanitizer' "$SERVER_LOG" | head -60
    fi
}

# stop_server [SIGNAL]: signal (TERM by default) and wait up to 10 s; sets
# STOP_RC to the exit status and STOP_SECONDS to the time it took, or kills
# it (-9) and returns 1 if it was still running.
stop_server() {
    local sig=${1:-TERM}
    STOP_RC=
    STOP_SECONDS=
    [ -n "$SERVER_PID" ] || return 0
    local t0=$(date +%s%N)
    kill -"$sig" "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null
            STOP_RC=$?
            STOP_SECONDS=$(( ($(date +%s%N) - t0) / 1000000 ))
            STOP_SECONDS=$(printf '%d.%03d' $((STOP_SECONDS / 1000)) $((STOP_SECONDS % 1000)))
            SERVER_PID=
            check_log
            return 0
        fi
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    return 1
}

cleanup_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -9 "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    SERVER_PID=
}

# req NAME WANT_CODE CURL_ARGS...: runs curl (body in $tmp/body, headers in
# $tmp/headers), checks the status code; returns 1 on mismatch.
req() {
    local name=$1 want=$2
    shift 2
    CODE=$(curl -s --max-time 30 -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@")
    if [ "$CODE" != "$want" ]; then
        fail "$name: HTTP $CODE, want $want: $(head -c 400 "$tmp/body")"
        return 1
    fi
    ok "$name (HTTP $CODE)"
    return 0
}

# jcheck NAME JQ_EXPR: the last body must satisfy the jq expression.
jcheck() {
    if jq -e "$2" "$tmp/body" >/dev/null 2>&1; then
        ok "$1"
    else
        fail "$1: '$2' is false on $(head -c 400 "$tmp/body")"
    fi
}

# A photo-sized test image: Debian's darknet dog.jpg when installed, else a
# 1200x900 PNG written with Python's standard library, else empty.
photo_image() {
    if [ -f /usr/share/darknet/data/dog.jpg ]; then
        echo /usr/share/darknet/data/dog.jpg
    elif command -v python3 >/dev/null 2>&1; then
        python3 - "$tmp/photo.png" <<'PY' && echo "$tmp/photo.png"
import struct, sys, zlib
w, h = 1200, 900
raw = bytearray()
for y in range(h):
    raw.append(0)
    for x in range(w):
        raw += bytes(((x + y) % 256, (x * 3) % 256, (y * 5) % 256))
def chunk(t, d):
    c = struct.pack(">I", len(d)) + t + d
    return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
    fi
}
