#!/usr/bin/env bash
# camserve explain (and classify) over files and folders: overlays and a
# JSON-lines report per image, a bad file reported and skipped (non-zero
# exit at the end), no progress bar when stderr is not a terminal, and on
# one (script(1)'s pseudo-terminal) ScoreCAM's percentage; the same
# answers whatever the thread count; a fixed-batch model fed in padded runs.
#   bash tests/cli/explain_files.sh CAMSERVE_BIN SOURCE_DIR SHARED_DIR
set -u
bin=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
mkdir -p "$tmp/in/sub"
samples=("$src"/web/samples/*.jpg)
[ ${#samples[@]} -ge 3 ] || { echo "skipped: no sample images in web/samples"; exit 77; }
cp "${samples[0]}" "$tmp/in/a.jpg"
cp "${samples[1]}" "$tmp/in/b.jpg"
printf 'not an image' > "$tmp/in/c.jpg"
cp "${samples[2]}" "$tmp/in/sub/ignored.jpg"   # folders are not recursed
printf 'x' > "$tmp/in/notes.txt"               # not an image name: not listed

"$bin" explain --image "$tmp/in" --image "${samples[2]}" --out "$tmp/out" --json >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
[ "$rc" -eq 1 ] || fail "exit status $rc with one bad file, want 1"
grep -q "c.jpg: invalid image" "$tmp/stderr" || fail "bad file not reported: $(cat "$tmp/stderr")"
grep -q $'\r' "$tmp/stderr" && fail "progress bar written to a pipe"
lines=$(wc -l <"$tmp/stdout")
[ "$lines" -eq 4 ] || fail "$lines JSON lines on stdout, want 4 (3 images + 1 error)"
cmp -s "$tmp/stdout" "$tmp/out/report.jsonl" || fail "report.jsonl differs from stdout"
python3 - "$tmp/stdout" <<'PY' || fail "JSON lines"
import json, sys
rows = {r["image"].rsplit("/", 1)[1]: r for r in map(json.loads, open(sys.argv[1]))}
assert len(rows) == 4 and {"a.jpg", "b.jpg", "c.jpg"} <= set(rows), list(rows)
assert "error" in rows["c.jpg"] and "predictions" not in rows["c.jpg"]
for name, r in rows.items():
    if name != "c.jpg":
        assert len(r["predictions"]) == 5 and r["cam"]["height"] > 1, r
PY
for f in a b; do
  [ -s "$tmp/out/$f.overlay.png" ] && [ -s "$tmp/out/$f.heatmap.png" ] || fail "$f: overlay/heatmap missing"
done
# --class by the label, case folded; part of one lists those containing it
"$bin" explain --image "$tmp/in/a.jpg" --class Dog --json >"$tmp/dog.json" 2>"$tmp/dog.err" \
    || fail "--class Dog: exit $?: $(cat "$tmp/dog.err")"
jq -e '.cam.label == "dog" and .cam.class_index == (.predictions[] | select(.label == "dog") | .index)' \
    "$tmp/dog.json" >/dev/null || fail "--class Dog did not explain the class labelled dog: $(head -c 400 "$tmp/dog.json")"
"$bin" explain --image "$tmp/in/a.jpg" --class og >/dev/null 2>"$tmp/og.err" && fail "--class og: exit 0"
grep -q "unknown class 'og': no label is exactly that; labels containing it: [0-9]* dog" "$tmp/og.err" \
    || fail "--class og: $(cat "$tmp/og.err")"
[ -e "$tmp/out/c.overlay.png" ] && fail "an overlay for the bad file"
[ -e "$tmp/out/ignored.overlay.png" ] && fail "a subfolder was recursed"

# files decoded side by side and overlays encoded side by side (--threads 2:
# the CLI's pool has a helper whatever the machine's cores) give what one
# thread gives, byte for byte, in the same order; a bad file in the middle
# is reported once, in path order, before its chunk's results
mkdir -p "$tmp/many"
for i in 1 2 3 4 5 6; do cp "${samples[$(( i % ${#samples[@]} ))]}" "$tmp/many/f$i.jpg"; done
head -c 3000 "${samples[0]}" > "$tmp/many/f3.jpg"   # cut: invalid
for t in 1 2; do
  "$bin" explain --image "$tmp/many" --out "$tmp/many_out$t" --threads "$t" --json >"$tmp/many$t.json" 2>/dev/null
  [ $? -eq 1 ] || fail "--threads $t: a folder with one bad file did not exit 1"
done
# the good ones alone (nothing to skip or pack) are the reference
"$bin" explain --image "$tmp/many/f1.jpg" --image "$tmp/many/f2.jpg" --image "$tmp/many/f4.jpg" \
  --image "$tmp/many/f5.jpg" --image "$tmp/many/f6.jpg" --threads 1 --json >"$tmp/many_ref.json" 2>/dev/null ||
  fail "five good files: non-zero exit"
python3 - "$tmp/many1.json" "$tmp/many2.json" "$tmp/many_ref.json" <<'PY' || fail "--threads 1 and 2 answer differently"
import json, sys
def rows(p, encoded=True):
    out = []
    for r in map(json.loads, open(p)):
        t = r.pop("timings_ms", None)
        if "error" not in r:  # each image's own decode time, not a chunk's average
            assert t["decode"] > 0 and (t["encode"] > 0) == encoded, t
        out.append(r)
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert a == b, (a, b)
names = [r["image"].rsplit("/", 1)[1] for r in a]
assert names == ["f3.jpg", "f1.jpg", "f2.jpg", "f4.jpg", "f5.jpg", "f6.jpg"], names
assert a[1:] == rows(sys.argv[3], False), "a bad file changed the other files' answers"
PY
for f in "$tmp"/many_out1/*.png; do
  cmp -s "$f" "$tmp/many_out2/$(basename "$f")" || fail "$(basename "$f") differs between --threads 1 and 2"
done
[ "$(ls "$tmp"/many_out2/*.png | wc -l)" -eq 10 ] || fail "--threads 2: $(ls "$tmp"/many_out2/*.png | wc -l) PNGs, want 10"

# classify takes folders too, keeps going past a bad file (reported in
# path order, exit 1), and answers each good file as it does alone
"$bin" classify --image "$tmp/many/" --threads 2 --json >"$tmp/cls.json" 2>"$tmp/cls.err"
[ $? -eq 1 ] || fail "classify: a folder with one bad file did not exit 1"
grep -q "f3.jpg: invalid image" "$tmp/cls.err" || fail "classify: bad file not reported: $(cat "$tmp/cls.err")"
grep -q "1 of 6 image(s) could not be read" "$tmp/cls.err" || fail "classify: no count of bad files: $(cat "$tmp/cls.err")"
"$bin" classify --image "$tmp/many/f5.jpg" --json >"$tmp/cls5.json" 2>/dev/null || fail "classify one good file: non-zero exit"
python3 - "$tmp/cls.json" "$tmp/cls5.json" <<'PY' || fail "classify over a folder"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = [r["image"].rsplit("/", 1)[1] for r in rows]
assert not any("//" in r["image"] for r in rows), [r["image"] for r in rows]  # "DIR/" given
assert names == ["f3.jpg", "f1.jpg", "f2.jpg", "f4.jpg", "f5.jpg", "f6.jpg"], names
assert "error" in rows[0] and all(len(r["predictions"]) == 5 for r in rows[1:])
alone = json.loads(open(sys.argv[2]).read())
# the same classes; scores within float noise (a batch of 5 runs other kernels than a batch of 1)
got, want = rows[4]["predictions"], alone["predictions"]
assert [p["index"] for p in got] == [p["index"] for p in want], (got, want)
assert all(abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(got, want)), (got, want)
PY

# a model exported with a fixed batch of 2 takes 5 images as 2 + 2 + 1
# (the last run padded), with the answers of the same model at any batch
mkdir -p "$tmp/b2"
cp "$src/tests/data/onnx/tiny_conv.onnx" "$src/tests/data/onnx/tiny_conv_b2.onnx" "$tmp/b2/"
for m in tiny_conv tiny_conv_b2; do
  printf '{"resize": 8, "crop": 8}\n' > "$tmp/b2/$m.json"
done
good=("$tmp/many/f1.jpg" "$tmp/many/f2.jpg" "$tmp/many/f4.jpg" "$tmp/many/f5.jpg" "$tmp/many/f6.jpg")
args=()
for f in "${good[@]}"; do args+=(--image "$f"); done
for m in tiny_conv tiny_conv_b2; do
  "$bin" classify --model "$tmp/b2/$m.onnx" "${args[@]}" --topk 4 --save-logits "$tmp/b2/$m.npy" --json \
    >"$tmp/b2/$m.out" 2>"$tmp/b2/$m.err" || fail "classify with $m: $(cat "$tmp/b2/$m.err")"
  "$bin" explain --model "$tmp/b2/$m.onnx" "${args[@]}" --save-cam "$tmp/b2/$m.cam.npy" --json \
    >"$tmp/b2/$m.explain" 2>"$tmp/b2/$m.err" || fail "explain with $m: $(cat "$tmp/b2/$m.err")"
  # the methods whose weights come from extra forwards hand the model 16 or
  # 32 inputs at a time; a fixed batch runs them 2 at a time
  for meth in scorecam ablationcam; do
    "$bin" explain --model "$tmp/b2/$m.onnx" "${args[@]}" --method $meth --save-cam "$tmp/b2/$m.$meth.npy" \
      >/dev/null 2>"$tmp/b2/$m.err" || fail "explain --method $meth with $m: $(cat "$tmp/b2/$m.err")"
  done
done
python3 - "$tmp/b2" <<'PY' || fail "fixed batch of 2: answers differ from the dynamic-batch model"
import json, sys
d = sys.argv[1]
a = [json.loads(l) for l in open(d + "/tiny_conv.out")]
b = [json.loads(l) for l in open(d + "/tiny_conv_b2.out")]
assert len(a) == len(b) == 5, (len(a), len(b))
for x, y in zip(a, b):
    assert x["image"] == y["image"]
    assert [p["index"] for p in x["predictions"]] == [p["index"] for p in y["predictions"]], (x, y)
    for p, q in zip(x["predictions"], y["predictions"]):
        assert abs(p["score"] - q["score"]) < 1e-5, (p, q)
a, b = open(d + "/tiny_conv.npy", "rb").read(), open(d + "/tiny_conv_b2.npy", "rb").read()
assert b"(5, 4)" in a and b"(5, 4)" in b, (a[:80], b[:80])
# explain: the same classes, and the same maps within float noise (npy:
# a header, then float32 little-endian)
import array
def maps(p):
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[8:10], "little")
    assert b"(5, " in raw[10:10 + n], raw[:10 + n]
    return array.array("f", raw[10 + n:])
ea = [json.loads(l) for l in open(d + "/tiny_conv.explain")]
eb = [json.loads(l) for l in open(d + "/tiny_conv_b2.explain")]
assert [x["cam"]["class_index"] for x in ea] == [y["cam"]["class_index"] for y in eb] and len(eb) == 5
for kind in ("cam", "scorecam", "ablationcam"):
    ma, mb = maps(d + "/tiny_conv." + kind + ".npy"), maps(d + "/tiny_conv_b2." + kind + ".npy")
    assert len(ma) == len(mb) > 0, kind
    diff = max(abs(p - q) for p, q in zip(ma, mb))
    assert diff < 1e-4, (kind, diff)
    assert max(ma) > 0.5, (kind, max(ma))  # a map, not zeros
PY

# ScoreCAM on a terminal: its percentage, then the answer on a clean line
if command -v script >/dev/null 2>&1; then
  script -q -c "'$bin' explain --method scorecam --image '${samples[0]}' --threads 1" /dev/null >"$tmp/tty.out" 2>&1
  grep -qa $'\rscorecam [0-9]*%' "$tmp/tty.out" || fail "no ScoreCAM percentage on a terminal: $(head -c 300 "$tmp/tty.out")"
  grep -qa $'\r'"${samples[0]}:" "$tmp/tty.out" || fail "the answer does not start a clean line: $(head -c 300 "$tmp/tty.out")"
  grep -qa "scorecam map for class" "$tmp/tty.out" || fail "no ScoreCAM answer on a terminal"
  "$bin" explain --method scorecam --image "${samples[0]}" >/dev/null 2>"$tmp/pipe.err"
  [ -s "$tmp/pipe.err" ] && fail "ScoreCAM wrote to stderr on a pipe: $(head -c 200 "$tmp/pipe.err")"
else
  echo "note: script(1) not installed; the terminal check is skipped"
fi

# all good: exit 0
"$bin" explain --image "$tmp/in/a.jpg" --image "$tmp/in/b.jpg" >/dev/null 2>&1 || fail "two good files: non-zero exit"
if [ "$fails" -ne 0 ]; then echo "explain_files: $fails check(s) failed"; exit 1; fi
echo "explain_files: all checks passed"
