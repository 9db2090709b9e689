#!/usr/bin/env bash
# The camserve binary's error behaviour and machine-readable output.
#
#   bash tests/cli/cli_errors.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
#
# Exit codes the CLI promises: 0 ok, 1 runtime failure (one line on stderr
# saying what failed), 2 usage error.  Every check runs even after a failure;
# the script exits 1 if any failed.
set -u
bin=$1
src=$2
model=$src/tests/golden/resnet_basic/model.onnx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/cli/lib/check.bash" # fail, ok, run NAME WANT_RC CMD...

# Guard against a crash being mistaken for an error exit: sanitizer reports
# and signals land in stderr / exit codes >= 128.
no_crash() {
    if grep -qE 'AddressSanitizer|UndefinedBehaviorSanitizer|runtime error|LeakSanitizer' "$tmp/err"; then
        fail "$1: sanitizer report on stderr"; head -20 "$tmp/err"
    fi
}

json_ok() { python3 -c 'import json,sys; json.load(sys.stdin)' <"$1" 2>/dev/null; }

# ---- usage errors: exit 2 ---------------------------------------------------
run "no arguments" 2 "$bin"
grep -q usage "$tmp/err" || fail "no arguments: no usage on stderr"
run "unknown command" 2 "$bin" frobnicate
grep -q frobnicate "$tmp/err" || fail "unknown command: stderr does not name it"
# Without --model the binary uses the default model embedded at build time
# (models/default/); a build without one must say so and point at --model.
"$bin" inspect >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 0 ]; then
    ok "inspect without --model: uses the embedded default model"
elif [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; then
    if grep -q -- '--model' "$tmp/err"; then ok "inspect without --model (exit $rc, no default model)"
    else fail "inspect without --model: exit $rc but stderr does not mention --model: $(cat "$tmp/err")"; fi
else
    fail "inspect without --model: exit $rc"
fi
no_crash "inspect without --model"
run "inspect unknown option" 2 "$bin" inspect --model "$model" --no-such-option
run "classify without input" 2 "$bin" classify --model "$model"
run "help" 0 "$bin" help
run "serve: --labels not one per --model" 2 "$bin" serve --model "$model" --model "$model:b" --labels "$tmp/l.txt"
grep -q "one labels file per model" "$tmp/err" || fail "serve --labels count: stderr '$(cat "$tmp/err")'"
# a command's own usage, from --help / -h anywhere on its line or `help CMD`
for form in "explain --help" "explain --model x.onnx -h" "help explain"; do
    run "$form" 0 "$bin" $form
    grep -q '^usage: camserve explain ' "$tmp/out" || fail "$form: stdout '$(head -c 200 "$tmp/out")'"
done
run "version" 0 "$bin" version
grep -q '^camserve ' "$tmp/out" || fail "version: output '$(cat "$tmp/out")'"

# ---- runtime errors: exit 1, one line naming the problem -------------------
missing=$tmp/no_such_dir/missing_model.onnx
run "missing model file" 1 "$bin" inspect --model "$missing" && {
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "missing model file: $(wc -l <"$tmp/err") lines on stderr, want 1"
    grep -qF "$missing" "$tmp/err" || fail "missing model file: stderr does not name the file: $(cat "$tmp/err")"
}
no_crash "missing model file"

# garbage instead of a model
printf 'definitely not an onnx file' >"$tmp/garbage.onnx"
run "garbage model" 1 "$bin" inspect --model "$tmp/garbage.onnx" && {
    grep -qF "$tmp/garbage.onnx" "$tmp/err" || fail "garbage model: stderr does not name the file"
}
no_crash "garbage model"

# unsupported op: the message names the op and the node
if [ -f "$src/tests/data/onnx/unsupported_op.onnx" ]; then
    run "unsupported op" 1 "$bin" inspect --model "$src/tests/data/onnx/unsupported_op.onnx" && {
        grep -q 'Foo' "$tmp/err" && grep -q 'my_foo_node' "$tmp/err" ||
            fail "unsupported op: stderr lacks op/node name: $(cat "$tmp/err")"
    }
    no_crash "unsupported op"
fi

# a tensor of the wrong shape (resnet_basic wants N x 3 x 64 x 64)
python3 - "$tmp/wrong.npy" <<'EOF'
import struct, sys
# a float32 (1, 3, 32, 32) .npy written by hand: no numpy needed
shape = (1, 3, 32, 32)
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), }"
hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
n = 1 * 3 * 32 * 32
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%df" % n, *([0.5] * n)))
EOF
run "classify wrong tensor shape" 1 "$bin" classify --model "$model" --tensor "$tmp/wrong.npy" && {
    [ "$(wc -l <"$tmp/err")" -le 2 ] || fail "wrong shape: more than 2 lines on stderr"
    grep -qiE 'shape' "$tmp/err" || fail "wrong shape: message does not mention the shape: $(cat "$tmp/err")"
    grep -qF "wrong.npy" "$tmp/err" || fail "wrong shape: message does not name the tensor file"
}
no_crash "classify wrong tensor shape"

# a tensor file that is not .npy
run "classify bad tensor file" 1 "$bin" classify --model "$model" --tensor "$tmp/garbage.onnx"
no_crash "classify bad tensor file"
run "classify missing tensor file" 1 "$bin" classify --model "$model" --tensor "$tmp/nope.npy" && {
    grep -qF "nope.npy" "$tmp/err" || fail "missing tensor: stderr does not name the file"
}

# ---- inspect --json -----------------------------------------------------------
if run "inspect --json" 0 "$bin" inspect --model "$model" --json; then
    if json_ok "$tmp/out"; then
        ok "inspect --json parses"
        python3 - "$tmp/out" "$src/tests/golden/resnet_basic/meta.json" <<'EOF' || fail "inspect --json content"
import json, sys
o = json.load(open(sys.argv[1]))
meta = json.load(open(sys.argv[2]))
layers = o["layers"]
assert isinstance(layers, list) and layers, "no layers"
defaults = [l for l in layers if l.get("default")]
assert len(defaults) == 1, f"{len(defaults)} layers marked default"
assert defaults[0]["name"] == o["default_layer"], (defaults[0]["name"], o["default_layer"])
assert o["default_layer"] == meta["default_layer"], (o["default_layer"], meta["default_layer"])
assert all(len(l["shape"]) == 3 for l in layers), "layer shapes must be C,H,W"
assert o["num_classes"] == meta["num_classes"], o["num_classes"]
assert o["inputs"][0]["shape"][1:] == meta["input_shape"][1:], o["inputs"]
print(f"ok:   inspect --json: {len(layers)} layers, default {o['default_layer']}")
EOF
    else
        fail "inspect --json output does not parse: $(head -c 300 "$tmp/out")"
    fi
fi

# ---- classify --json with the golden input ----------------------------------
if run "classify --tensor --json" 0 "$bin" classify --model "$model" \
    --tensor "$src/tests/golden/resnet_basic/input.npy" --json --topk 3; then
    # JSON Lines: one object per image of the batch (2 in input.npy)
    python3 - "$tmp/out" <<'EOF' || fail "classify --json: $(head -c 400 "$tmp/out")"
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
assert len(lines) == 2, f"{len(lines)} JSON lines for a batch of 2"
for l in lines:
    o = json.loads(l)
    p = o["predictions"]
    assert len(p) == 3 and all(0 <= q["index"] < 10 for q in p), p
    assert p[0]["score"] >= p[1]["score"] >= p[2]["score"], p
print("ok:   classify --json: one object per image")
EOF
fi

# ---- bench --json ----------------------------------------------------------------
if run "bench --json" 0 "$bin" bench --model "$model" \
    --tensor "$src/tests/golden/resnet_basic/input.npy" --iters 3 --warmup 1 --json; then
    python3 - "$tmp/out" <<'EOF' || fail "bench --json: $(head -c 400 "$tmp/out")"
import json, sys
text = open(sys.argv[1]).read()
o = json.loads(text)          # exactly one JSON document
assert isinstance(o, dict), "not an object"
m = o["stages"]["forward"]["median_ms"]
assert isinstance(m, (int, float)) and m > 0, m
print(f"ok:   bench --json: forward median {m:.3f} ms")
EOF
fi

# ---- serve: what would break its JSON answers is refused at load ------------------
# (jansson refuses text that is not UTF-8, and the field with it)
mkdir -p "$tmp/latin1"
cp "$model" "$tmp/latin1/m.onnx"
printf 'cat\ncaf\xe9\n' >"$tmp/latin1/labels.txt"
printf '{"labels": "labels.txt"}\n' >"$tmp/latin1/m.json"
run "serve: labels not UTF-8" 1 timeout 60 "$bin" serve --model "$tmp/latin1/m.onnx" --port 0
LC_ALL=C grep -aq 'labels.txt.*line 2 is not UTF-8' "$tmp/err" || fail "serve: labels not UTF-8: stderr: $(head -c 400 "$tmp/err")"
no_crash "serve: labels not UTF-8"
# the CLI reads labels files the same way (its --json would drop them too)
x=$src/tests/golden/resnet_basic/input.npy
run "classify: labels not UTF-8" 1 "$bin" classify --model "$tmp/latin1/m.onnx" --tensor "$x" --json
LC_ALL=C grep -aq 'labels.txt.*line 2 is not UTF-8' "$tmp/err" || fail "classify: labels not UTF-8: stderr: $(head -c 400 "$tmp/err")"
run "classify --labels not UTF-8" 1 "$bin" classify --model "$model" --tensor "$x" --labels "$tmp/latin1/labels.txt"
LC_ALL=C grep -aq 'labels.txt: labels: line 2 is not UTF-8' "$tmp/err" || fail "classify --labels not UTF-8: stderr: $(head -c 400 "$tmp/err")"
printf 'one\ntwo\n' >"$tmp/two.txt" # 2 labels for 10 classes: a warning, then used
run "classify: labels count unlike the classes" 0 "$bin" classify --model "$model" --tensor "$x" --labels "$tmp/two.txt"
grep -q "warning: $tmp/two.txt has 2 labels but the model has 10 classes" "$tmp/err" || fail "labels count: stderr: $(cat "$tmp/err")"
printf 'cat\ncaf\xc3\xa9\r\n' >"$tmp/latin1/labels.txt" # UTF-8, CRLF: fine
run "classify: UTF-8 labels" 0 "$bin" classify --model "$tmp/latin1/m.onnx" --tensor "$x" --json
run "serve: model name not UTF-8" 1 timeout 60 "$bin" serve --model "$model:$(printf 'r\xe9sn')" --port 0
LC_ALL=C grep -aq 'model name.*UTF-8' "$tmp/err" || fail "serve: model name not UTF-8: stderr: $(head -c 400 "$tmp/err")"
no_crash "serve: model name not UTF-8"

if [ "$fails" -ne 0 ]; then
    echo "cli_errors: $fails check(s) failed"
    exit 1
fi
echo "cli_errors: all checks passed"
