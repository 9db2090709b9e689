# Shared by the CLI tests: count failures instead of stopping at the first,
# and run a command expecting an exit status.  Not a test itself (ctest
# only globs tests/cli/*.sh).  Requires $tmp (a scratch dir) for run.

fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok:   $*"; }

# run NAME WANT_RC CMD...: runs CMD with stdout/stderr captured in $tmp/out,
# $tmp/err and checks the exit status.
run() {
    local name=$1 want=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$name: exit $rc, want $want; stderr: $(head -c 600 "$tmp/err")"
        return 1
    fi
    ok "$name (exit $rc)"
    return 0
}
