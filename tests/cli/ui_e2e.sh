#!/usr/bin/env bash
# The web UI end to end in headless Chromium: tests/e2e/ui.mjs against a
# `camserve serve` on 127.0.0.1.  Screenshots are kept as test artifacts in
# <build dir>/test-artifacts/ui/ (or $CAMSERVE_ARTIFACTS/ui).
#
# Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM), node, and the
# npm package playwright-core in tests/e2e/node_modules (npm install
# --prefix tests/e2e) or in $CAMSERVE_NODE_MODULES.  Skips (77) without them.
#
#   bash tests/cli/ui_e2e.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1
src=$2
model=$src/tests/golden/resnet_basic/model.onnx
tmp=$(mktemp -d)
. "$src/tests/cli/lib/server_common.bash"
trap 'cleanup_server; rm -rf "$tmp"' EXIT
need_tools node

chromium=${CHROMIUM:-/usr/bin/chromium}
modules=${CAMSERVE_NODE_MODULES:-$src/tests/e2e/node_modules}
if [ ! -x "$chromium" ]; then
    echo "SKIP: no Chromium at $chromium (apt-get install chromium)"
    exit 77
fi
if [ ! -d "$modules/playwright-core" ]; then
    echo "SKIP: playwright-core not found in $modules (npm install --prefix tests/e2e)"
    exit 77
fi
artifacts=${CAMSERVE_ARTIFACTS:-$(dirname "$bin")/test-artifacts}/ui
mkdir -p "$artifacts"

image=$(photo_image)
[ -n "$image" ] || image=$src/tests/data/images/resize_src.png
printf 'definitely not a JPEG\n' >"$tmp/corrupt.jpg"

# the embedded default model (with its labels and samples) when this source
# tree has one -- the binary built from it embeds it; else the golden model
args=(--model "$model") gallery=no
[ -f "$src/models/default/model.onnx" ] && args=() gallery=yes
start_server ui "${args[@]}" || exit 1
CAMSERVE_NODE_MODULES=$modules CHROMIUM=$chromium timeout 120 \
    node "$src/tests/e2e/ui.mjs" --url "$BASE/" --image "$image" --corrupt "$tmp/corrupt.jpg" --out "$artifacts" \
    --gallery "$gallery" --abort yes
rc=$?
[ "$rc" -eq 0 ] && ok "UI end to end (screenshots in $artifacts)" || fail "ui.mjs exit $rc"
stop_server TERM

# another model than the built-in one: the samples (pictures of the
# built-in model's classes) give way to a note, and the photo is uploaded
if [ "$gallery" = yes ]; then
    start_server ui_other --model "$model:golden" || exit 1
    CAMSERVE_NODE_MODULES=$modules CHROMIUM=$chromium timeout 120 \
        node "$src/tests/e2e/ui.mjs" --url "$BASE/" --image "$image" --corrupt "$tmp/corrupt.jpg" \
        --out "$artifacts/other-model" --gallery no
    rc=$?
    [ "$rc" -eq 0 ] && ok "UI end to end with another model (screenshots in $artifacts/other-model)" \
        || fail "ui.mjs (another model) exit $rc"
    stop_server TERM
fi
echo "ui_e2e: $fails failure(s)"
[ "$fails" -eq 0 ]
