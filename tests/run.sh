#!/bin/sh
# Run every test binary and script, each under a time limit, and print the
# single closing line "N passed, N failed".  A test that dies without saying
# "not ok" (crash, timeout, sanitizer report) counts as one failure.
set -u
BUILD=${BUILD:-build}
export BUILD
passed=0
failed=0
log=$(mktemp -d "${TMPDIR:-/tmp}/resild-tests.XXXXXX")
run_one() {
    name=$1; shift
    out="$log/$name.out"
    timeout -k 5 300 "$@" >"$out" 2>"$log/$name.err"
    rc=$?
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^not ok ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "not ok - $name exited with status $rc" >>"$out"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-28s %4d passed, %d failed\n' "$name" "$p" "$f"
    if [ "$f" -ne 0 ]; then
        grep -v '^ok ' "$out" | sed 's/^/    /' | head -n 40
        sed 's/^/    stderr: /' "$log/$name.err" | tail -n 40
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.py; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t")" /usr/bin/python3 "$t"
done
rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
