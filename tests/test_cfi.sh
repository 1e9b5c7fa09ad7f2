#!/bin/sh
# test_cfi.sh: the context switches' unwind tables (src/ctx_*.S) never say
# a register is saved below the stack pointer. Memory there is not the
# switch's any more: a signal handler's frame may be written over it, and
# a backtrace taken in that handler (a profiler's, a crash reporter's)
# would read its garbage as the caller. Both assembly backends, whatever
# the host: clang assembles for either target.
#   test_cfi.sh <clang> <readelf> <src directory>
set -u
clang=$1 readelf=$2 src=$3
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
status=0 checked=0
for arch in x86_64 aarch64; do
    # A clang built without that target skips it (the lane of that
    # architecture assembles it for real).
    if ! "$clang" --target=$arch-linux-gnu -c "$src/ctx_$arch.S" -o "$tmp/$arch.o" 2>"$tmp/err"; then
        echo "test_cfi: skipped ctx_$arch.S: $(head -n 1 "$tmp/err")"
        continue
    fi
    # Rows are "LOC CFA rule...": a rule c-N (saved at CFA-N) with the CFA
    # at sp+M is below the stack pointer when N > M.
    bad=$("$readelf" --debug-dump=frames-interp "$tmp/$arch.o" | awk '
        $1 == "LOC" { n = split($0, names); next }
        $2 ~ /^r?sp\+[0-9]+$/ {
            off = substr($2, index($2, "+") + 1) + 0
            for (i = 3; i <= NF; i++)
                if ($i ~ /^c-[0-9]+$/ && substr($i, 3) + 0 > off)
                    print "  at " $1 ": CFA " $2 ", " names[i] " saved at " $i
        }')
    checked=$((checked + 1))
    rows=$("$readelf" --debug-dump=frames-interp "$tmp/$arch.o" | grep -c 'sp+')
    [ "$rows" -gt 0 ] || { echo "test_cfi: no unwind rows for ctx_$arch.S"; exit 1; }
    if [ -n "$bad" ]; then
        echo "test_cfi: ctx_$arch.S says registers are saved below the stack pointer:"
        echo "$bad"
        status=1
    fi
done
[ $status = 0 ] && echo "test_cfi: ok ($checked of 2 backends checked)"
exit $status
