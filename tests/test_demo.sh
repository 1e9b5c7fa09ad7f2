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

# The workload comes from --seed and --work-scale as experiment.h says
# (splitmix64: delay, then work, per task), and the bound is DESIGN.md's
# max(max_i(io_i + cpu_i), min_i(io_i) + sum_i(cpu_i) / P) at the run's
# own ns/unit, P = min(loops, cpus): regenerate the tasks here and recompute both. Seed 83's two
# tasks sleep within 9 ms of each other and sum for ~60 ms each, so there
# the second term would be the larger had it divided by 1, not 2.
for run in "300 2 12345" "300 2 18446744073709551615" "2 300 83"; do
    set -- $run
    out=$("$demo" --tasks "$1" --work-scale "$2" --loops 2 --seed "$3" --mode steal --json) ||
        fail "'$run' run exited $?"
    echo "$out" | python3 -c '
import json, sys
tasks, scale, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
r = json.loads(sys.stdin.read())
assert r["seed"] == seed and r["tasks"] == tasks and r["work_scale"] == scale, r
assert r["results_ok"] is True and r["loops"] == 2, r
M = (1 << 64) - 1
state = seed
def splitmix64():
    global state
    state = (state + 0x9E3779B97F4A7C15) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
io, units = [], []
for i in range(tasks):
    io.append((200000000 + splitmix64() % 800000001) / 1e9)
    units.append(int((100000 + splitmix64() % 400001) * scale + 0.5))
unit = r["unit_ns"]
cpu = [u * unit / 1e9 for u in units]
cpu_s = sum(cpu)
assert abs(r["cpu_s"] - cpu_s) <= 0.002 * cpu_s + 0.0002, ("cpu_s", r["cpu_s"], cpu_s)
bound = max(max(a + b for a, b in zip(io, cpu)), min(io) + cpu_s / min(r["loops"], r["cpus"]))
assert abs(r["bound_s"] - bound) <= 0.0003, ("bound_s", r["bound_s"], bound)
' "$@" || fail "'$run': workload or bound not as generated: $out"
done

# More loops than CPUs (oversubscription, a legitimate experiment): the
# bound is for P = min(loops, CPUs of the affinity mask) cores, not for
# the loops, and the run says how many CPUs it had ("cpus"). Here 4 loops
# on one CPU: every summation shares that CPU, so the bound is at least
# the summed CPU time (it was min_io + cpu_s / 4, below it), and it is
# still a lower bound (efficiency <= 1): per-unit cost from elapsed time
# would count the other loops' turns on the CPU into each summation.
cpu=$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')
out=$(taskset -c "$cpu" "$demo" --tasks 1000 --work-scale 10 --loops 4 --mode steal --json) ||
    fail "--loops 4 on one CPU exited $?"
echo "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
assert r["results_ok"] is True and r["loops"] == 4, r
assert r.get("cpus") == 1, ("cpus", r)
assert r["bound_s"] >= r["cpu_s"], ("bound below the CPU time on one CPU", r)
assert 0 < r["efficiency"] <= 1.02, ("efficiency", r)
' || fail "--loops 4 on one CPU: $out"

# A run that fails (here: no 1 TiB stack within a 4 GB address space) is
# reported, with exit status 1. Not where a sanitizer needs the address
# space for its shadow.
if ! grep -qa -e __asan_init -e __tsan_init "$demo"; then
    out=$(ulimit -v 4000000 && CORIO_STACK_SIZE=1024g "$demo" --tasks 10 --work-scale 0.05 \
          --mode steal --json)
    rc=$?
    [ "$rc" -eq 1 ] || fail "failed run: exited $rc, not 1: $out"
    echo "$out" | grep -q '"results_ok":false' || fail "failed run: results_ok: $out"
    echo "$out" | grep -q '"error":"E' || fail "failed run: no error named: $out"
    # A run whose runtime cannot even start (no address space for the
    # loop threads' stacks) never learned its default loop count: null in
    # JSON, "-" in the table, not a made-up 0.
    out=$(ulimit -v 8000 && "$demo" --tasks 10 --work-scale 0.05 --mode steal --json)
    echo "$out" | grep -q '"loops":null,.*"error":"E' || fail "unstarted run: $out"
    out=$(ulimit -v 8000 && "$demo" --tasks 10 --work-scale 0.05 --mode steal)
    echo "$out" | grep -q "^steal *- *10 *failed: " || fail "unstarted run, table: $out"
    # A missing result is an error even where the right one is 0: at a
    # work scale this small every task sums 0 or 1 unit (sum 0). One loop,
    # 4 GiB stacks and an 18 GiB address space: the main task, the loop's
    # light-task stack and both seed tasks fit (16 GiB), a summer does not,
    # so offload's summations never run.
    out=$(ulimit -v 18874368 && CORIO_STACK_SIZE=4g "$demo" --tasks 2 --loops 1 \
          --work-scale 0.000001 --mode offload --json)
    rc=$?
    [ "$rc" -eq 1 ] || fail "missing zero results: exited $rc, not 1: $out"
    echo "$out" | grep -q '"results_ok":false' || fail "missing zero results: $out"
fi

# The JSON names the work scale the run used, to the last digit: a reader
# regenerating the workload from it (as above) must get the same tasks.
out=$("$demo" --tasks 20 --work-scale 1.23456789 --loops 2 --mode steal --json) ||
    fail "--work-scale 1.23456789 exited $?"
echo "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
assert r["work_scale"] == 1.23456789, r["work_scale"]
' || fail "work_scale not as given: $out"

table=$("$demo" --tasks 200 --work-scale 0.2 --mode offload) || fail "table run exited $?"
echo "$table" | grep -q "^offload *2 *200 " || fail "table row missing: $table"
echo "$table" | grep -q "WRONG" && fail "wrong results: $table"

"$demo" --help | grep -q "usage: corio-demo" || fail "--help"

# Fewer tasks than the default 5 batches: fine when --batches was not given
# (the batches run, if any, uses one batch per task).
out=$("$demo" --tasks 3 --work-scale 0.05 --mode single) || fail "--tasks 3 --mode single exited $?"
echo "$out" | grep -q "^single *1 *3 " || fail "--tasks 3 --mode single: row missing: $out"
out=$("$demo" --tasks 3 --work-scale 0.05 --mode batches --json) ||
    fail "--tasks 3 --mode batches exited $?"
echo "$out" | grep -q '"results_ok":true' || fail "--tasks 3 --mode batches: $out"
echo "$out" | grep -q '"batches":3' || fail "--tasks 3 --mode batches: not 3 batches: $out"

check_bad() {
    err=$("$demo" "$@" 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 2 ] || fail "'$*' exited $rc, not 2"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "'$*' printed more than one line: $err"
    case "$err" in corio-demo:*) ;; *) fail "'$*' message not prefixed: $err" ;; esac
    [ -z "${want:-}" ] || case "$err" in *"$want"*) ;; *) fail "'$*' message lacks '$want': $err" ;; esac
}
for bad in "--tasks 0" "--tasks x" "--loops 0" "--work-scale -1" "--mode fast" \
           "--batches 0" "--seed -3" "--bogus" "--tasks" "stray" "--tasks 5 --batches 9" \
           "--tasks 3 --batches 5 --mode batches" "--seed +3" "--work-scale inf" "--work-scale 0x1"; do
    # shellcheck disable=SC2086
    check_bad $bad
done
# An option the chosen mode does not use would be silently ignored.
want="applies to --mode batches only"
check_bad --mode steal --batches 3
check_bad --batches 3 --mode single
want="does not apply to --mode single"
check_bad --mode single --loops 2
want=
"$demo" --tasks 2 --work-scale 0.05 --mode single --loops 1 >/dev/null || fail "--mode single --loops 1 exited $?"
# Without --mode each applies to the runs that use it.
out=$("$demo" --tasks 4 --work-scale 0.05 --loops 1 --batches 2 --json) ||
    fail "--loops 1 --batches 2 without --mode exited $?"
echo "$out" | grep -q '"mode":"batches".*"batches":2' || fail "--batches 2 not used by the batches run: $out"
[ "$(echo "$out" | grep -c '"loops":1,')" -eq "$(echo "$out" | wc -l)" ] ||
    fail "--loops 1 not used by every run: $out"
# A flag given a value is named as such, not as an unknown option.
want="--json takes no value"
check_bad --json=1
check_bad --json=
want=
# An option given twice: the second value would silently replace the first.
want="given more than once"
check_bad --mode single --mode steal
check_bad --tasks 5 --tasks=6
check_bad --seed 1 --json --seed 1
check_bad --json --tasks 5 --json
want=
# An argument with a newline in it still makes one line.
nl='
'
check_bad --mode "single${nl}steal"
check_bad "stray${nl}line"
check_bad "--bo${nl}gus=1"
check_bad --json="${nl}"
check_bad --tasks "5${nl}"
# A bad CORIO_* environment variable: the same, before any run, naming it.
for env in CORIO_LOOPS=abc CORIO_LOOPS=0 CORIO_STACK_SIZE=-5 CORIO_PIN=yes "CORIO_LOOPS=1${nl}2"; do
    err=$(env "$env" "$demo" --tasks 10 --work-scale 0.05 2>&1 >/dev/null)
    rc=$?
    [ "$rc" -eq 2 ] || fail "$env: exited $rc, not 2"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "$env: more than one line: $err"
    # (Up to a newline, which the message shows as \x0a.)
    case "$err" in corio-demo:*"${env%%"$nl"*}"*) ;; *) fail "$env: message does not name it: $err" ;; esac
done
# Leading blanks, which strtoull and strtod would skip (" -1": UINT64_MAX).
for opt in --seed --tasks --loops --batches --work-scale; do
    check_bad "$opt" " -1"
    check_bad "$opt" " 1"
    check_bad "$opt=+1"
done
# A scale above 0 that strtod calls an underflow (subnormal) is still
# above 0; one that underflows to 0 is not.
"$demo" --tasks 2 --work-scale 5e-324 --mode single >/dev/null || fail "--work-scale 5e-324 exited $?"
check_bad --work-scale 1e-400
# Results that could not be written are a failure, said in one line.
if [ -w /dev/full ]; then
    err=$("$demo" --tasks 2 --work-scale 0.05 --mode single --json 2>&1 >/dev/full)
    rc=$?
    [ "$rc" -eq 1 ] || fail "output to /dev/full exited $rc, not 1"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "output to /dev/full: more than one line: $err"
    case "$err" in corio-demo:*"could not write"*) ;; *) fail "output to /dev/full: $err" ;; esac
fi
echo "test_demo: ok"
