#!/usr/bin/env bash
# test.sh: build corio and run the whole test suite in every lane.
#
#   normal    RelWithDebInfo, every test
#   debug     Debug (-O0): frames and code paths as a debug build lays them out
#   asan      ASan + UBSan, every test
#   tsan      ThreadSanitizer, every test
#   valgrind  every test under valgrind memcheck (stacks registered)
#   ucontext  the portable context-switch fallback instead of assembly
#   arm64     cross-built for aarch64, run under qemu-user
#
# Usage: scripts/test.sh [lane...]   (default: all lanes, in that order)
# Each lane builds in build-<lane>/ and runs ctest there. Slow lanes scale
# iteration counts down with CORIO_TEST_SCALE (tests/test.h). Exit status
# is non-zero if any lane fails; the summary at the end says which and
# how long each took. An unknown lane: one line, exit 2, nothing run.
set -uo pipefail
cd "$(dirname "$0")/.."

all_lanes=(normal debug asan tsan valgrind ucontext arm64)
lanes=("$@")
[ ${#lanes[@]} -gt 0 ] || lanes=("${all_lanes[@]}")
# A mistyped lane fails at once, before any install or build (and not
# after the lanes named before it have run).
for lane in "${lanes[@]}"; do
    case " ${all_lanes[*]} " in
        *" $lane "*) ;;
        *) echo "test.sh: unknown lane '$lane' (${all_lanes[*]})" >&2; exit 2 ;;
    esac
done
scripts/deps.sh || exit 1

jobs=$(nproc)

declare -A result
run_lane() {
    local lane=$1 dir="build-$1" cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORIO_BUILD_TOOLS=ON -DCORIO_BUILD_TESTS=ON) env=()
    case "$lane" in
        normal) ;;
        debug)    cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DCORIO_BUILD_TOOLS=ON -DCORIO_BUILD_TESTS=ON) ;;
        asan)     cmake_args+=(-DCORIO_SANITIZE=address)
                  env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0
                       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CORIO_TEST_SCALE=4) ;;
        tsan)     cmake_args+=(-DCORIO_SANITIZE=thread)
                  env=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 CORIO_TEST_SCALE=10) ;;
        valgrind) cmake_args+=(-DCORIO_VALGRIND=ON
                               "-DCORIO_TEST_WRAPPER=valgrind;--quiet;--fair-sched=yes;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite;--track-fds=no;--suppressions=$PWD/tests/valgrind.supp")
                  env=(CORIO_TEST_SCALE=50 CORIO_TEST_SLOW=1 CORIO_TEST_VALGRIND=1) ;;
        ucontext) cmake_args+=(-DCORIO_CONTEXT=ucontext)
                  env=(CORIO_TEST_SCALE=4) ;;
        arm64)    scripts/deps.sh qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross || return 1
                  cmake_args+=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
                               -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc
                               -DCMAKE_ASM_COMPILER=aarch64-linux-gnu-gcc
                               "-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64;-L;/usr/aarch64-linux-gnu")
                  env=(CORIO_TEST_SCALE=10 CORIO_TEST_SLOW=1 CORIO_TEST_QEMU=1) ;;
        *) echo "test.sh: unknown lane '$lane' (normal debug asan tsan valgrind ucontext arm64)"; return 2 ;;
    esac
    echo "=== lane $lane: build"
    cmake -S . -B "$dir" "${cmake_args[@]}" >/dev/null || return 1
    if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
        grep -E 'error|warning' "$dir/build.log" | head -20
        return 1
    fi
    echo "=== lane $lane: test"
    local skip=()
    # Under qemu-user an emulated process cannot exec the aarch64 example
    # servers (no binfmt handler on a fresh machine); the other lanes run
    # the examples test.
    [ "$lane" = arm64 ] && skip=(-E '^examples$')
    (cd "$dir" && env "${env[@]}" ctest --output-on-failure --no-tests=error -j"$jobs" "${skip[@]}")
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
