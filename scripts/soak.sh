#!/usr/bin/env bash
# scripts/soak.sh: run one test binary over and over, in parallel, to catch
# failures that show up once in hundreds of runs (a lost wake-up, a race).
#
#   scripts/soak.sh [-j WORKERS] [-t SECONDS] [-k KEEP] BINARY [TEST...]
#
# WORKERS processes (default: online CPUs) each run `BINARY TEST...` in a
# loop until SECONDS (default 60) have passed. Every failing run's output is
# kept, up to KEEP logs (default 5; 0 keeps none), in $SOAK_DIR (default
# /tmp/corio-soak). A hung run is killed by the harness's watchdog
# (CORIO_TEST_WATCHDOG, default 45 s, stretched for sanitizer builds:
# tests/test.h), which names the test that hung. (A 30 s default here
# killed test_faults' io scenario, which takes ~30 s under ASan.)
# Prints runs and failures; exits 1 if any run failed, 2 on bad usage.
set -u

workers=$(nproc)
seconds=60
keep=5
usage() { echo "usage: scripts/soak.sh [-j WORKERS] [-t SECONDS] [-k KEEP] BINARY [TEST...]" >&2; exit 2; }
while getopts "j:t:k:" opt; do
    case $opt in
        j) workers=$OPTARG ;;
        t) seconds=$OPTARG ;;
        k) keep=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
# WORKERS and SECONDS at least 1: none would report "0 runs, 0 failed" as
# a pass. KEEP may be 0 (count failures, keep no logs). At most 9 digits,
# within shell arithmetic; at most 4096 workers, which fork at once.
number() { # number OPT VALUE MIN MAX
    if ! [[ $2 =~ ^[0-9]{1,9}$ ]] || [ "$((10#$2))" -lt "$3" ] || [ "$((10#$2))" -gt "$4" ]; then
        echo "soak: $1 needs an integer from $3 to $4, got '$2'" >&2
        exit 2
    fi
}
number -j "$workers" 1 4096
number -t "$seconds" 1 999999999
number -k "$keep" 0 999999999
workers=$((10#$workers)) seconds=$((10#$seconds)) keep=$((10#$keep))
[ -x "$1" ] || { echo "soak: not an executable: $1" >&2; exit 2; }
# A name without a slash would be looked up in PATH when run, not taken
# from the current directory where the check above found it.
case $1 in */*) ;; *) set -- "./$1" "${@:2}" ;; esac

dir=${SOAK_DIR:-/tmp/corio-soak}
mkdir -p "$dir" || exit 2
end=$((SECONDS + seconds))

# Each worker appends one line per run to its own tally file: "ok" or the
# name of the log it kept (or "fail" once KEEP logs exist).
worker() {
    local id=$1; shift
    local tally="$dir/tally.$id" run=0 log
    : >"$tally"
    while [ $SECONDS -lt $end ]; do
        run=$((run + 1))
        log="$dir/run.$id.$run"
        if "$@" >"$log" 2>&1; then
            echo ok >>"$tally"
            rm -f "$log"
        else
            # mkdir is atomic: the first KEEP failures claim a slot.
            local slot
            for slot in $(seq 1 "$keep") ""; do
                [ -n "$slot" ] && mkdir "$dir/slot.$slot" 2>/dev/null && break
            done
            if [ -n "$slot" ]; then
                mv "$log" "$dir/fail-$slot.log"
                echo "fail-$slot.log" >>"$tally"
            else
                rm -f "$log"
                echo fail >>"$tally"
            fi
        fi
    done
}

rm -rf "$dir"/slot.* "$dir"/tally.* "$dir"/fail-*.log
# Interrupted (Ctrl-C, a timeout's TERM): stop the workers and leave only
# the failure logs kept so far, not the half-written run logs and tallies.
stop() {
    trap - INT TERM
    kill $(jobs -p) 2>/dev/null
    wait
    rm -rf "$dir"/slot.* "$dir"/tally.* "$dir"/run.*
    echo "soak: interrupted" >&2
    exit 130
}
trap stop INT TERM
for i in $(seq 1 "$workers"); do
    worker "$i" "$@" &
done
wait

runs=$(cat "$dir"/tally.* | wc -l)
fails=$(grep -vc '^ok$' "$dir"/tally.* | awk -F: '{s += $NF} END {print s + 0}')
rm -rf "$dir"/slot.* "$dir"/tally.*
echo "soak: $* : $runs runs in ${seconds} s on $workers workers, $fails failed"
if [ "$fails" -gt 0 ]; then
    for f in "$dir"/fail-*.log; do
        [ -e "$f" ] || { echo "--- no logs kept (-k $keep)"; break; }
        echo "--- $f (last lines)"
        tail -n 5 "$f"
    done
    exit 1
fi
exit 0
