"""
corio.py: gdb commands for looking at corio tasks.

Load it with `source tools/gdb/corio.py` (or add that line to ~/.gdbinit),
in a live process or a core file of a program linked with corio (not
stripped). Commands:

  corio tasks        every started task of every running runtime: id,
                     loop, state, what it waits on, and its function;
                     never-run tasks on each loop are counted (queued
                     to be stolen, or pinned to it and waiting to start).
  corio bt ID        backtrace of the suspended task with that id; in a
                     live process only (it sets registers, which gdb
                     refuses in a core file).

How `corio bt` works: a suspended task's stack pointer is saved in its
context; the switch left the callee-saved registers and the return
address just above it (src/ctx_x86_64.S, src/ctx_aarch64.S). The command
points the selected thread's registers at that frame, prints `bt`, and
puts the registers back. A light task whose frames were moved off the
shared stack (another light task ran since) cannot be unwound; the
command says so.
"""
import gdb

STATES = {0: "new", 1: "ready", 2: "running", 3: "waiting", 4: "done"}
FLAG_LIGHT = 1


def runtimes():
    rt = gdb.parse_and_eval("corio__debug_runtimes")
    while int(rt) != 0:
        yield rt
        rt = rt["debug_next"]


def loops(rt):
    for i in range(int(rt["nloops"])):
        yield rt["loops"][i]


def started_tasks():
    """(loop, task) for every started, unfinished task."""
    for rt in runtimes():
        for loop in loops(rt):
            t = loop["live"]
            while int(t) != 0:
                yield loop, t
                t = t["run"]["live_next"]


def chain(t):
    """The tasks of a list linked by `next` (a loop's ready list, inbox)."""
    while int(t) != 0:
        yield t
        t = t["next"]


def unstarted_off_runq(loop, started):
    """Never-run tasks of loop outside its run queue: on its ready list
    (pinned, spawned there), in its inbox (spawned from another thread),
    or on its stalled list (light tasks, pinned or not, whose start found
    no memory: an unpinned one left the run queue when the loop took it)."""
    waiting = 0
    for head in (loop["ready_head"], loop["stalled_head"], loop["inbox"]):
        try:
            waiting += sum(1 for t in chain(head) if int(t) not in started)
        except gdb.error:
            pass  # a list being changed at the stop: not counted
    return waiting


def function_name(addr):
    block = gdb.block_for_pc(int(addr))
    while block is not None and block.function is None:
        block = block.superblock
    if block is not None and block.function is not None:
        return block.function.name
    # "NAME + OFF in section S", or "No symbol matches ..." (not a name).
    sym = gdb.execute("info symbol 0x%x" % int(addr), to_string=True)
    if not sym or sym.startswith("No symbol"):
        return "0x%x" % int(addr)
    return sym.split(" ")[0]


def wait_name(t):
    """What a started task waits on (src/wait_kind.h)."""
    try:
        return gdb.parse_and_eval("corio__wait_names")[int(t["wait_what"])].string()
    except gdb.error:
        return "?"


class CorioPrefix(gdb.Command):
    """Inspect corio tasks: `corio tasks`, `corio bt ID`."""

    def __init__(self):
        super().__init__("corio", gdb.COMMAND_USER, prefix=True)


class CorioTasks(gdb.Command):
    """List corio's started tasks: id, loop, state, wait, function."""

    def __init__(self):
        super().__init__("corio tasks", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        print("%-8s %-5s %-8s %-14s %-5s %s" % ("id", "loop", "state", "waits on", "kind", "function"))
        count = 0
        started = set()
        for loop, t in started_tasks():
            started.add(int(t))
            state = STATES.get(int(t["state"]), str(int(t["state"])))
            if int(loop["current"]) == int(t):
                state = "running"
            kind = "light" if int(t["flags"]) & FLAG_LIGHT else "stack"
            print("%-8d %-5d %-8s %-14s %-5s %s" % (int(t["id"]), int(loop["index"]), state,
                                                 wait_name(t), kind,
                                                 function_name(t["fn"])))
            count += 1
        for rt in runtimes():
            for loop in loops(rt):
                q = loop["runq"]
                queued = int(q["tail"]) - int(q["head"]) + int(q["overflow_len"])
                queued += unstarted_off_runq(loop, started)
                if queued:
                    print("loop %d: %d never-run tasks queued" % (int(loop["index"]), queued))
                q = loop["roam"]
                roaming = int(q["tail"]) - int(q["head"]) + int(q["overflow_len"])
                if roaming:
                    # Woken CORIO_TASK_MIGRATE tasks between loops: on no
                    # live list until a loop adopts them (sched.c).
                    print("loop %d: %d woken migrating tasks queued, not listed above"
                          % (int(loop["index"]), roaming))
        print("%d started task(s)" % count)


class CorioBt(gdb.Command):
    """Backtrace of a suspended corio task: corio bt ID."""

    def __init__(self):
        super().__init__("corio bt", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        try:
            want = int(arg.strip())
        except ValueError:
            raise gdb.GdbError("usage: corio bt ID")
        for loop, t in started_tasks():
            if int(t["id"]) != want:
                continue
            if int(loop["current"]) == int(t):
                raise gdb.GdbError("task %d is running on loop %d: select that thread and use bt"
                                   % (want, int(loop["index"])))
            if int(t["flags"]) & FLAG_LIGHT and int(loop["shared_owner"]) != int(t):
                raise gdb.GdbError("task %d is a light task whose frames are saved off its "
                                   "stack; it cannot be unwound in place" % want)
            self.backtrace(t)
            return
        raise gdb.GdbError("no started task with id %d" % want)

    def backtrace(self, t):
        arch = gdb.selected_frame().architecture().name()
        ctx = t["run"]["ctx"]
        if "uc" in [f.name for f in ctx.type.fields()]:
            regs = self.ucontext_regs(ctx["uc"], arch)
        else:
            regs = self.switch_frame_regs(int(ctx["sp"]), arch)
        gdb.execute("select-frame 0")
        saved = {name: int(gdb.parse_and_eval("$" + name)) for name in regs}
        try:
            for name, value in regs.items():
                gdb.execute("set $%s = %d" % (name, value))
            gdb.execute("bt")
        finally:
            gdb.execute("select-frame 0")
            for name, value in saved.items():
                gdb.execute("set $%s = %d" % (name, value))

    @staticmethod
    def ucontext_regs(uc, arch):
        """Registers saved by swapcontext (the ucontext backend)."""
        if "x86-64" in arch:
            g = uc["uc_mcontext"]["gregs"]
            # glibc's REG_* indices: R12..R15 4..7, RBP 10, RBX 11, RSP 15, RIP 16
            names = {"r12": 4, "r13": 5, "r14": 6, "r15": 7, "rbp": 10, "rbx": 11,
                     "rsp": 15, "rip": 16}
            return {n: int(g[i]) & 0xFFFFFFFFFFFFFFFF for n, i in names.items()}
        if "aarch64" in arch:
            m = uc["uc_mcontext"]
            regs = {"x%d" % n: int(m["regs"][n]) for n in range(19, 31)}
            regs.update({"sp": int(m["sp"]), "pc": int(m["pc"])})
            return regs
        raise gdb.GdbError("corio bt supports x86-64 and aarch64, not %s" % arch)

    @staticmethod
    def switch_frame_regs(sp, arch):
        """Registers the assembly switch left above the saved stack pointer."""
        u64 = gdb.lookup_type("unsigned long long").pointer()
        slot = lambda i: int(gdb.Value(sp + 8 * i).cast(u64).dereference())
        if "x86-64" in arch:
            regs = {"rsp": sp + 64, "rip": slot(7), "rbp": slot(6), "rbx": slot(5),
                    "r12": slot(4), "r13": slot(3), "r14": slot(2), "r15": slot(1)}
        elif "aarch64" in arch:
            # Every callee-saved register, x19-x30 in its first 12 words:
            # one left out would show the selected thread's value in the
            # task's frames.
            regs = {"x%d" % (19 + i): slot(i) for i in range(12)}
            regs.update({"sp": sp + 176, "pc": slot(11)})
        else:
            raise gdb.GdbError("corio bt supports x86-64 and aarch64, not %s" % arch)
        return regs


CorioPrefix()
CorioTasks()
CorioBt()
