#!/usr/bin/env bash
# test.sh: build corio and run the whole test suite in every lane.
#
#   normal   RelWithDebInfo, every test
#   asan     ASan + UBSan, every test
#   tsan     ThreadSanitizer, every test (big iteration counts scaled down)
#
# Usage: scripts/test.sh [lane...]   (default: all lanes)
# Each lane builds in build-<lane>/ and runs ctest there. Exit status is
# non-zero if any lane fails; the summary at the end says which.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

jobs=$(nproc)
lanes=("$@")
[ ${#lanes[@]} -gt 0 ] || lanes=(normal asan tsan)

declare -A result
run_lane() {
    local lane=$1 dir="build-$1" cmake_args=() env=()
    case "$lane" in
        normal) cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
        asan)   cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORIO_SANITIZE=address)
                env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CORIO_TEST_SCALE=4) ;;
        tsan)   cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORIO_SANITIZE=thread)
                env=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 CORIO_TEST_SCALE=10) ;;
        *) echo "test.sh: unknown lane '$lane' (normal, asan, tsan)"; return 2 ;;
    esac
    echo "=== lane $lane: build"
    cmake -S . -B "$dir" "${cmake_args[@]}" >/dev/null || return 1
    cmake --build "$dir" -j"$jobs" >/dev/null || { cmake --build "$dir" 2>&1 | grep -E 'error|warning' | head -20; return 1; }
    echo "=== lane $lane: test"
    (cd "$dir" && env "${env[@]}" ctest --output-on-failure -j"$jobs")
}

status=0
start=$(date +%s)
for lane in "${lanes[@]}"; do
    lane_start=$(date +%s)
    if run_lane "$lane"; then result[$lane]="passed"; else result[$lane]="FAILED"; status=1; fi
    result[$lane]+=" ($(( $(date +%s) - lane_start )) s)"
done
echo "=== summary ($(( $(date +%s) - start )) s)"
for lane in "${lanes[@]}"; do echo "  $lane: ${result[$lane]}"; done
exit $status
