#!/bin/sh
# test_gdb.sh: tools/gdb/corio.py lists the tasks of a stopped program and
# unwinds a suspended one down to its task function, ending cleanly at the
# entry trampoline.
#   test_gdb.sh <gdb_target program> <corio.py> <context backend: asm|ucontext>
set -u
target=$1 script=$2 backend=$3
out=$(gdb -q -batch -nx -ex run -ex "source $script" -ex "corio tasks" \
      -ex 'python
import gdb
ids = [l.split()[0] for l in gdb.execute("corio tasks", to_string=True).splitlines()
       if "gdb_sleeper" in l and "waiting" in l]
gdb.execute("corio bt " + ids[0])
gdb.execute("corio bt " + ids[1])
' -ex 'python
# The aarch64 switch frame (src/ctx_aarch64.S) holds x19-x30 in its first
# 12 words: corio bt must load every one (checked on any host: it reads
# words of a suspended task stack as if they were that frame).
import gdb
loop, t = next(started_tasks())
sp = int(t["run"]["ctx"]["sp"]) if "sp" in [f.name for f in t["run"]["ctx"].type.fields()] else 0
if sp:
    u64 = gdb.lookup_type("unsigned long long").pointer()
    words = [int(gdb.Value(sp + 8 * i).cast(u64).dereference()) for i in range(12)]
    want = dict(("x%d" % (19 + i), words[i]) for i in range(12))
    want.update(sp=sp + 176, pc=words[11])
    got = CorioBt.switch_frame_regs(sp, "aarch64")
    print("aarch64 frame registers:", "ok" if got == want else
          "missing %s" % sorted(set(want) - set(got)))
# An address no symbol covers is shown as the address (gdb answers "No
# symbol matches ...", whose first word was shown as the name).
print("nameless address:", function_name(0x10))
' "$target" 2>&1)
fail() { echo "test_gdb: $1"; echo "$out"; exit 1; }
echo "$out" | grep -q "running  -              stack gdb_main" || fail "main task not listed as running"
[ "$(echo "$out" | grep -c 'waiting  sleep          stack gdb_sleeper')" -ge 2 ] || fail "sleepers not listed"
echo "$out" | grep -q "waiting  chan recv      stack gdb_receiver" || fail "receiver not listed"
echo "$out" | grep -q "waiting  sleep          stack gdb_group_child" ||
    fail "group child not listed under its own function"
echo "$out" | grep -q "5 started task(s)" || fail "task count"
echo "$out" | grep -q "loop [01]: 1 never-run tasks queued" || fail "pinned unstarted task not counted"
[ "$(echo "$out" | grep -c 'in sleeper_in_depth')" -ge 2 ] || fail "no frame of the task function in the backtraces"
[ "$(echo "$out" | grep -c 'in task_entry')" -ge 2 ] || fail "backtraces do not reach task_entry"
# The assembly backends' trampoline ends the unwind cleanly (its CFI says
# it has no caller); swapcontext's start frame is libc's business.
if [ "$backend" = asm ]; then
    [ "$(echo "$out" | grep -c 'corio__ctx_trampoline')" -ge 2 ] ||
        fail "backtraces do not end at the trampoline"
fi
if [ "$backend" = asm ]; then
    echo "$out" | grep -q "aarch64 frame registers: ok" ||
        fail "corio bt would not load every register of an aarch64 switch frame"
fi
echo "$out" | grep -q "nameless address: 0x10$" || fail "an address without a symbol is not shown as itself"
echo "$out" | grep -qi "corrupt\|previous frame identical" && fail "unwinding went wrong"
echo "test_gdb: ok"
