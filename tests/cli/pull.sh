#!/usr/bin/env bash
# camserve pull against a local HTTP server: a verified download, a corrupted
# one (rejected, nothing left behind), an unreachable server (one clear line).
# usage: pull.sh CAMSERVE SOURCE_DIR [SHARED_DIR]
set -u
BIN=$1
SRC=$2
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
command -v sha256sum >/dev/null 2>&1 || { echo "SKIP: sha256sum not found"; exit 77; }

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$WORK/www" "$WORK/models"
cp "$SRC/tests/golden/resnet_basic/model.onnx" "$WORK/www/good.onnx"
cp "$WORK/www/good.onnx" "$WORK/www/bad.onnx"
printf 'X' | dd of="$WORK/www/bad.onnx" bs=1 seek=100 conv=notrunc status=none
SHA=$(sha256sum "$WORK/www/good.onnx" | cut -d' ' -f1)

# a free port: bind to 0 and let the kernel choose
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do
    python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT)))" && break
    sleep 0.1
done
URL=http://127.0.0.1:$PORT

# 1. verified download
OUT=$("$BIN" pull tiny --url "$URL/good.onnx" --sha256 "$SHA" --dir "$WORK/models" 2>"$WORK/err") \
    || fail "good download failed: $(cat "$WORK/err")"
[ "$OUT" = "$WORK/models/tiny.onnx" ] || fail "unexpected path '$OUT'"
cmp -s "$WORK/models/tiny.onnx" "$WORK/www/good.onnx" || fail "downloaded bytes differ"
[ ! -e "$WORK/models/tiny.onnx.part" ] || fail "partial file left after success"
"$BIN" inspect --model "$WORK/models/tiny.onnx" >/dev/null || fail "pulled model does not load"
# a second pull finds the verified copy (the server log shows no new GET)
GETS=$(grep -c 'GET /good.onnx' "$WORK/server.log")
"$BIN" pull tiny --url "$URL/good.onnx" --sha256 "$SHA" --dir "$WORK/models" >/dev/null 2>&1 || fail "re-pull failed"
[ "$(grep -c 'GET /good.onnx' "$WORK/server.log")" = "$GETS" ] || fail "re-pull downloaded again"

# 2. corrupted download: rejected, non-zero exit, nothing left
if "$BIN" pull broken --url "$URL/bad.onnx" --sha256 "$SHA" --dir "$WORK/models" >/dev/null 2>"$WORK/err"; then
    fail "corrupted download accepted"
fi
grep -q "checksum mismatch" "$WORK/err" || fail "no checksum message: $(cat "$WORK/err")"
[ ! -e "$WORK/models/broken.onnx" ] && [ ! -e "$WORK/models/broken.onnx.part" ] || fail "corrupted file left behind"

# 3. catalog name through a mirror (CAMSERVE_PULL_BASE_URL): the mirror serves
#    a file whose hash is not the pinned one, so it must be refused
cp "$WORK/www/good.onnx" "$WORK/www/squeezenet1.1-7.onnx"
if CAMSERVE_PULL_BASE_URL=$URL "$BIN" pull squeezenet --dir "$WORK/models" >/dev/null 2>"$WORK/err"; then
    fail "mirror file with the wrong hash accepted"
fi
grep -Eq "checksum mismatch|bytes, expected" "$WORK/err" || fail "mirror: unclear error: $(cat "$WORK/err")"
[ ! -e "$WORK/models/squeezenet.onnx" ] && [ ! -e "$WORK/models/squeezenet.onnx.part" ] || fail "mirror: file left behind"

# 4. bad arguments
"$BIN" pull tiny --url "$URL/good.onnx" --dir "$WORK/models" >/dev/null 2>&1 && fail "--url without --sha256 accepted"
"$BIN" pull ../evil --url "$URL/good.onnx" --sha256 "$SHA" --dir "$WORK/models" >/dev/null 2>&1 && fail "path in name accepted"
"$BIN" pull no-such-model --dir "$WORK/models" >/dev/null 2>&1 && fail "unknown model accepted"
"$BIN" pull --list | grep -q '^resnet50 ' || fail "--list lacks resnet50"

# 5. unreachable server: non-zero exit, one clear line
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=
if "$BIN" pull tiny2 --url "$URL/good.onnx" --sha256 "$SHA" --dir "$WORK/models" >/dev/null 2>"$WORK/err"; then
    fail "download from a stopped server succeeded"
fi
[ "$(wc -l <"$WORK/err")" = 1 ] || fail "expected one line, got: $(cat "$WORK/err")"
grep -q "cannot download $URL/good.onnx" "$WORK/err" || fail "unclear offline error: $(cat "$WORK/err")"
[ ! -e "$WORK/models/tiny2.onnx.part" ] || fail "partial file left after a failed connection"
echo "pull: ok"
