#!/bin/sh
# test_signal_safe.sh: the watchdog's dump (src/debug.c), which a test's
# SIGALRM handler calls, calls nothing that is not async-signal-safe. The
# printf family may take locks or malloc, and a handler that lands while
# its thread is inside malloc or holds that lock deadlocks or corrupts the
# heap: a race no run shows on demand, so this reads what debug.c's object
# file calls instead, against a list of functions known to be safe.
#   test_signal_safe.sh <nm> <libcorio.a>
set -u
nm=$1 lib=$2
# signal-safety(7): write, getpid, clock_gettime (corio_now), nanosleep
# (the list's writers, never in a handler), memcpy; process_vm_readv is a
# bare system call. corio_now, corio__runq_len (three atomic loads) and
# corio__wait_names (data) are corio's. The rest is what compilers and
# sanitizers add: errno's address, the GOT, stack protection, fortified
# copies, sanitizer hooks, and on aarch64 libgcc's outline atomics
# (__aarch64_cas8_acq_rel and kin: one LSE instruction or an LL/SC loop,
# no lock, chosen at start-up).
safe='write getpid nanosleep memcpy memset __memcpy_chk process_vm_readv __errno_location
      corio_now corio__runq_len corio__wait_names _GLOBAL_OFFSET_TABLE_ __stack_chk_fail'
calls=$("$nm" -A -u "$lib" | sed -n 's/^.*debug\.c\.o: *U //p')
[ -n "$calls" ] || { echo "test_signal_safe: no undefined symbols of debug.c.o in $lib"; exit 1; }
bad=
for sym in $calls; do
    case $sym in __asan_* | __ubsan_* | __tsan_* | __sanitizer_* | __aarch64_cas* | __aarch64_ld* | __aarch64_swp*) continue ;; esac
    case " $(echo $safe) " in *" $sym "*) ;; *) bad="$bad $sym" ;; esac
done
if [ -n "$bad" ]; then
    echo "test_signal_safe: debug.c calls what a signal handler must not:$bad"
    exit 1
fi
echo "test_signal_safe: ok ($(echo $calls | wc -w) symbols)"
