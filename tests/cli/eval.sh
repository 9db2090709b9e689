#!/usr/bin/env bash
# camserve eval on the committed small held-out set (tests/data/eval_small,
# 36 images of the default model's 12 classes with object masks): the JSON
# parses, and accuracy / pointing game / energy stay above what was measured
# (docs/models.md) minus a margin.
# usage: eval.sh CAMSERVE SOURCE_DIR [SHARED_DIR]
set -u
BIN=$1
SRC=$2
DATA=$SRC/tests/data/eval_small
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found (parses the JSON)"; exit 77; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$BIN" eval --data "$DATA" --method gradcam,gradcam++ --json >"$WORK/out.json" 2>"$WORK/err" \
    || fail "eval failed: $(cat "$WORK/err")"
[ ! -s "$WORK/err" ] || fail "stderr not empty without a tty: $(cat "$WORK/err")"
python3 - "$WORK/out.json" <<'PY' || exit 1
import json, sys
d = json.load(open(sys.argv[1]))
def check(cond, what):
    if not cond:
        print("FAIL:", what, json.dumps(d)[:2000]); sys.exit(1)
check(d["model"] == "default" and d["images"] == 36, "36 images of the default model")
check(d["accuracy"] >= 0.90, "accuracy >= 0.90 (measured 0.972)")
check(d["top5"] >= d["accuracy"], "top5 >= accuracy")
check(len(d["per_class"]) == 12 and all(v["n"] == 3 for v in d["per_class"].values()), "12 classes x 3")
m = {x["method"]: x for x in d["methods"]}
check(set(m) == {"gradcam", "gradcampp"}, "both methods reported")
g = m["gradcam"]
check(g["masked"] == 36, "every image has a mask")
check(g["pointing_game"] >= 0.80, "gradcam pointing game >= 0.80 (measured 0.917)")
check(g["energy_in_mask"] >= 0.45, "gradcam energy in mask >= 0.45 (measured 0.577)")
for x in m.values():
    check(0 <= x["deletion_auc"] < x["insertion_auc"] <= 1, x["method"] + ": deletion < insertion")
print("eval json: accuracy %.3f, gradcam pointing %.3f energy %.3f deletion %.3f insertion %.3f" %
      (d["accuracy"], g["pointing_game"], g["energy_in_mask"], g["deletion_auc"], g["insertion_auc"]))
PY

# --limit, --method none, the text report
"$BIN" eval --data "$DATA" --method none --limit 5 --json >"$WORK/lim.json" || fail "eval --limit failed"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["images"]==5 and d["methods"]==[] else 1)' \
    "$WORK/lim.json" || fail "--limit 5 --method none: $(cat "$WORK/lim.json")"
"$BIN" eval --data "$DATA" --limit 3 >"$WORK/text" || fail "text report failed"
grep -q '^accuracy:' "$WORK/text" && grep -q 'gradcam' "$WORK/text" || fail "text report: $(cat "$WORK/text")"

# without masks there is no pointing game or energy: null in JSON, "-" in text
mkdir -p "$WORK/nomask/cat" && cp "$DATA"/cat/*.jpg "$WORK/nomask/cat/"
"$BIN" eval --data "$WORK/nomask" --json >"$WORK/nm.json" || fail "eval without masks failed"
python3 -c 'import json,sys; g=json.load(open(sys.argv[1]))["methods"][0]; sys.exit(0 if g["masked"]==0 and g["pointing_game"] is None and g["energy_in_mask"] is None and g["insertion_auc"]>0 else 1)' \
    "$WORK/nm.json" || fail "eval without masks: $(cat "$WORK/nm.json")"
"$BIN" eval --data "$WORK/nomask" >"$WORK/nm.txt" || fail "eval without masks (text) failed"
grep -qE '^  gradcam +0 +- +- ' "$WORK/nm.txt" || fail "eval without masks, text: $(cat "$WORK/nm.txt")"

# errors: no --data, a missing folder, a folder that names no class, an unknown method
"$BIN" eval >/dev/null 2>&1; [ $? = 2 ] || fail "missing --data is not a usage error"
"$BIN" eval --data "$WORK/none" >/dev/null 2>&1 && fail "missing folder accepted"
mkdir -p "$WORK/bad/giraffe" && cp "$DATA"/cat/*.jpg "$WORK/bad/giraffe/"
"$BIN" eval --data "$WORK/bad" 2>"$WORK/err" >/dev/null && fail "unknown class folder accepted"
grep -q "giraffe" "$WORK/err" || fail "unknown class: unclear error: $(cat "$WORK/err")"
"$BIN" eval --data "$DATA" --method nosuchcam >/dev/null 2>&1 && fail "unknown method accepted"
echo "eval: ok"
