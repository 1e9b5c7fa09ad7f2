#!/bin/sh
# test_install.sh: what `cmake --install` puts down is usable: the header,
# the shared and static libraries, the pkg-config file and the CMake
# package; and the shared library exports corio's public API only.
#   test_install.sh <build dir> <source dir>
set -u
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_install: $1"; exit 1; }

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null || fail "cmake --install failed"
lib=$(find "$tmp/prefix" -name 'libcorio.so.*' | head -1)
[ -n "$lib" ] || fail "no shared library installed"
[ -f "$tmp/prefix/include/corio.h" ] || fail "no header installed"
others=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^corio_')
[ -z "$others" ] || fail "exports beyond the public API: $others"
nm -D --defined-only "$lib" | grep -q ' corio_run$' || fail "corio_run not exported"

# pkg-config, shared and static.
pcdir=$(dirname "$(find "$tmp/prefix" -name corio.pc | head -1)")
export PKG_CONFIG_PATH="$pcdir"
cc -o "$tmp/ex_pc" "$src/tests/install/example.c" $(pkg-config --cflags --libs corio) \
    -Wl,-rpath,"$(dirname "$lib")" || fail "build with pkg-config failed"
[ "$("$tmp/ex_pc")" = 1998 ] || fail "pkg-config build ran wrong"
static_libs=$(pkg-config --static --libs corio | sed 's/-lcorio//')
cc -o "$tmp/ex_pc_static" "$src/tests/install/example.c" $(pkg-config --cflags corio) \
    "$(dirname "$lib")/libcorio.a" $static_libs || fail "static build with pkg-config failed"
[ "$("$tmp/ex_pc_static")" = 1998 ] || fail "static pkg-config build ran wrong"

# The header alone, under strict ISO C (where <signal.h> leaves out
# sigset_t: corio_signal_wait is then left out), under POSIX and in C++.
for std in -std=c99 -std=c11 "-std=c11 -D_POSIX_C_SOURCE=200809L" -std=gnu11; do
    printf '#include <corio.h>\nint main(void) { return corio_loop_count() == 0; }\n' |
        cc $std -Wall -Werror -x c -c -o /dev/null -I"$tmp/prefix/include" - ||
        fail "corio.h does not compile with $std"
done
printf '#include <signal.h>\n#include <corio.h>\nint f(sigset_t *s, int *n) { return corio_signal_wait(s, n, CORIO_FOREVER); }\n' |
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Werror -x c -c -o /dev/null -I"$tmp/prefix/include" - ||
    fail "corio_signal_wait is not declared under POSIX"
if command -v c++ >/dev/null; then
    printf '#include <corio.h>\nint main() { return corio_loop_count() == 0; }\n' |
        c++ -Wall -Werror -x c++ -c -o /dev/null -I"$tmp/prefix/include" - ||
        fail "corio.h does not compile as C++"
fi

# find_package(corio).
cmake -S "$src/tests/install" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null \
    || fail "find_package(corio) failed"
cmake --build "$tmp/consumer" >/dev/null || fail "consumer build failed"
[ "$("$tmp/consumer/example_shared")" = 1998 ] || fail "CMake shared build ran wrong"
[ "$("$tmp/consumer/example_static")" = 1998 ] || fail "CMake static build ran wrong"
echo "test_install: ok"
