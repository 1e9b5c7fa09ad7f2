#!/bin/sh
# test_demo.sh: corio-demo's contract: every mode returns every result
# right and prints the documented JSON fields; the table; bad options give
# one line on stderr and exit 2.
#   test_demo.sh <corio-demo>
set -u
demo=$1
fail() { echo "test_demo: $1"; exit 1; }

out=$("$demo" --tasks 400 --work-scale 0.3 --loops 2 --json) || fail "JSON run exited $?"
echo "$out" | python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
modes = [r["mode"] for r in runs]
assert modes == ["single", "steal", "migrate", "offload", "batches"], modes
need = ["system", "mode", "loops", "tasks", "work_scale", "seed", "results_ok",
        "wall_s", "bound_s", "efficiency", "cpu_s", "unit_ns", "calib_unit_ns"]
for r in runs:
    missing = [k for k in need if k not in r]
    assert not missing, (r["mode"], missing)
    assert r["results_ok"] is True, r
    assert r["tasks"] == 400 and r["system"] == "corio", r
    assert r["loops"] == (1 if r["mode"] == "single" else 2), r
    assert 0.2 <= r["bound_s"] <= r["wall_s"] * 1.05, r
    assert 0 < r["efficiency"] <= 1.05, r
assert runs[4]["batches"] == 5
' || fail "JSON output wrong: $out"

table=$("$demo" --tasks 200 --work-scale 0.2 --mode offload) || fail "table run exited $?"
echo "$table" | grep -q "^offload *2 *200 " || fail "table row missing: $table"
echo "$table" | grep -q "WRONG" && fail "wrong results: $table"

"$demo" --help | grep -q "usage: corio-demo" || fail "--help"

for bad in "--tasks 0" "--tasks x" "--loops 0" "--work-scale -1" "--mode fast" \
           "--batches 0" "--seed -3" "--bogus" "--tasks" "stray" "--tasks 5 --batches 9"; do
    # shellcheck disable=SC2086
    err=$("$demo" $bad 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 2 ] || fail "'$bad' exited $rc, not 2"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "'$bad' printed more than one line: $err"
    case "$err" in corio-demo:*) ;; *) fail "'$bad' message not prefixed: $err" ;; esac
done
echo "test_demo: ok"
