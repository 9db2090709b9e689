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

# all good: exit 0
"$bin" explain --image "$tmp/in/a.jpg" --image "$tmp/in/b.jpg" >/dev/null 2>&1 || fail "two good files: non-zero exit"
if [ "$fails" -ne 0 ]; then echo "explain_files: $fails check(s) failed"; exit 1; fi
echo "explain_files: all checks passed"
