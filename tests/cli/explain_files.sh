#!/usr/bin/env bash
# camserve explain over files and folders: overlays and a JSON-lines report
# per image, a bad file reported and skipped (non-zero exit at the end),
# no progress bar when stderr is not a terminal.
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

# all good: exit 0
"$bin" explain --image "$tmp/in/a.jpg" --image "$tmp/in/b.jpg" >/dev/null 2>&1 || fail "two good files: non-zero exit"
if [ "$fails" -ne 0 ]; then echo "explain_files: $fails check(s) failed"; exit 1; fi
echo "explain_files: all checks passed"
