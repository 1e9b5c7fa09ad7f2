#!/usr/bin/env python3
"""seed_asyncio: the design brief's reference experiment on ONE asyncio loop.

10,000 tasks; each sleeps a random 0.2-1.0 s (the network wait), then sums
the integers below m (the parsing) and returns the sum; results are gathered
in task order and checked against m(m-1)/2. All of it runs on one event
loop, so one core: this is the problem corio exists to solve.

The workload is drawn bit-exactly like the C, Go and Rust peers (splitmix64,
same draw order, same rounding of n*K), so one seed means the same tasks in
every language; --debug prints a checksum of it on stderr.

Like corio-demo, each task times its own summation (monotonic clock, from
right after the sleep returns to right after the sum) and the lower bound
uses the run's measured cost: unit_ns = sum(work_ns) / sum(units). The
pre-run calibration is still done and reported as calib_unit_ns, for
reference only: this host's CPU speed drifts (up to 2x within a minute), so
a bound from it can exceed the wall.

Python's loop costs ~100x more per unit than C's, so Python runs at
work_scale 1 (the design brief's 87 s reference run) while compiled peers
use 10; compare efficiencies across languages, not walls.

Usage: seed_asyncio.py [--tasks N] [--work-scale K] [--seed S] [--loops 1]
                       [--json] [--debug]

seed_pool.py imports this module for the workload, the task body and the
report, so both Python peers measure exactly the same thing.
"""

import asyncio
import math
import sys
import time

MASK64 = (1 << 64) - 1


def die(prog, msg):
    """A usage error: one line on stderr, exit status 2 (as every peer)."""
    sys.stderr.write("%s: %s\n" % (prog, msg))
    sys.exit(2)


def splitmix64(state):
    """One splitmix64 step; returns (new_state, output), all wrapping u64."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def make_workload(tasks, scale, seed):
    """Per task, in order: delay_ns then n; m = floor(n*K + 0.5)."""
    state = seed & MASK64
    delays, ms = [], []
    for _ in range(tasks):
        state, r = splitmix64(state)
        delays.append(200000000 + r % 800000001)
        state, r = splitmix64(state)
        n = 100000 + r % 400001
        ms.append(int(math.floor(float(n) * scale + 0.5)))
    return delays, ms


def sum_below(m):
    """The parsing work: a plain loop, as in the reference experiment."""
    s = 0
    for i in range(m):
        s += i
    return s


def triangle(m):
    """m(m-1)/2 as a wrapping u64, like the other peers compute it."""
    return (m * (m - 1) // 2) & MASK64


def calibrate(units=1000000):
    """ns per iteration of sum_below, single process: best of 3 x 1M.

    Reported only (calib_unit_ns); the bound uses the run's measured cost."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        sum_below(units)
        best = min(best, (time.perf_counter_ns() - t0) / units)
    return best


def print_checksum(delays, ms):
    """Workload fingerprint shared by all peers: h = (h ^ m) * FNV prime."""
    h = 0xCBF29CE484222325
    for m in ms:
        h = ((h ^ m) * 0x100000001B3) & MASK64
    sys.stderr.write(
        '{"debug":"workload","tasks":%d,"m_sum":%d,"delay_sum":%d,"m_hash":"%016x"}\n'
        % (len(ms), sum(ms) & MASK64, sum(delays) & MASK64, h))


async def seed_task(delay_ns, m):
    """Sleep, then sum; returns (sum, work_ns), the summation timed alone."""
    await asyncio.sleep(delay_ns / 1e9)
    t0 = time.perf_counter_ns()
    s = sum_below(m)
    return s, time.perf_counter_ns() - t0


async def gather_all(delays, ms):
    return await asyncio.gather(*(seed_task(d, m) for d, m in zip(delays, ms)))


def run_batch(delays, ms):
    """One asyncio.run over a batch; seed_pool runs this in each worker.

    Returns (results, work_ns), two lists in task order: each task's sum
    and how long its summation took (ns)."""
    pairs = asyncio.run(gather_all(delays, ms))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def parse_args(prog, argv, defaults, extra=()):
    """--name V / --name=V options into a dict; flags --json and --debug.

    defaults maps option names (without --) to default values whose type
    (int or float) is how the value is parsed; extra names more int options.
    """
    opts = dict(defaults)
    opts.setdefault("json", False)
    opts.setdefault("debug", False)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, val = arg.partition("=")
        key = name[2:].replace("-", "_") if name.startswith("--") else None
        if key in ("json", "debug") and not eq:
            opts[key] = True
        elif key in defaults:
            if not eq:
                i += 1
                if i >= len(argv):
                    die(prog, "option %s needs a value" % name)
                val = argv[i]
            kind = type(defaults[key])
            try:
                v = kind(val)
            except ValueError:
                die(prog, "bad value for %s: %r" % (name, val))
            if kind is float and not (math.isfinite(v) and v >= 0):
                die(prog, "%s must be a finite number >= 0" % name)
            if kind is int and (v < 0 or v > MASK64):
                die(prog, "bad value for %s: %r" % (name, val))
            opts[key] = v
        else:
            die(prog, "unknown option %r (try --tasks N --work-scale K --seed S "
                "--loops P%s --json --debug)" % (arg, "".join(extra)))
        i += 1
    if opts["tasks"] < 1:
        die(prog, "--tasks must be >= 1")
    if opts["loops"] < 1:
        die(prog, "--loops must be >= 1")
    return opts


def fmt_scale(k):
    return str(int(k)) if k.is_integer() and abs(k) < 1e15 else repr(k)


def report(system, mode, opts, loops, delays, ms, results, work_ns, wall,
           calib_unit, extra=""):
    """Check results, compute the lower bound and print the one-line result.

    The bound uses this run's own cost per unit, sum(work_ns) / sum(units);
    calib_unit (the pre-run calibration) is only reported."""
    ok = len(results) == len(ms) and all(
        (r & MASK64) == triangle(m) for r, m in zip(results, ms))
    units = sum(ms)
    unit = sum(work_ns) / units if units > 0 and len(work_ns) == len(ms) else 0.0
    cpus = [m * unit for m in ms]
    sum_cpu = sum(cpus)
    bound = max(max(d + c for d, c in zip(delays, cpus)),
                min(delays) + sum_cpu / loops) / 1e9
    eff = bound / wall if wall > 0 else 0.0
    if opts["json"]:
        print('{"system":"%s","mode":"%s","loops":%d,"tasks":%d,"work_scale":%s,'
              '"seed":%d,"results_ok":%s,"wall_s":%.4f,"bound_s":%.4f,'
              '"efficiency":%.4f,"cpu_s":%.4f,"unit_ns":%.5f,"calib_unit_ns":%.5f%s}'
              % (system, mode, loops, len(ms), fmt_scale(opts["work_scale"]),
                 opts["seed"], "true" if ok else "false", wall, bound, eff,
                 sum_cpu / 1e9, unit, calib_unit, extra), flush=True)
    else:
        print("%s %s: loops=%d tasks=%d work_scale=%s seed=%d results_ok=%s "
              "wall=%.3fs bound=%.3fs efficiency=%.3f cpu=%.3fs unit=%.4fns "
              "(measured in the run) calib_unit=%.4fns"
              % (system, mode, loops, len(ms), fmt_scale(opts["work_scale"]),
                 opts["seed"], "true" if ok else "false", wall, bound, eff,
                 sum_cpu / 1e9, unit, calib_unit), flush=True)
    return ok


def main(argv):
    prog = "seed_asyncio"
    opts = parse_args(prog, argv, {"tasks": 10000, "work_scale": 1.0,
                                   "seed": 1, "loops": 1})
    if opts["loops"] != 1:
        die(prog, "one asyncio loop uses one core: --loops must be 1")
    delays, ms = make_workload(opts["tasks"], opts["work_scale"], opts["seed"])
    if opts["debug"]:
        print_checksum(delays, ms)
    calib_unit = calibrate()
    t0 = time.perf_counter()
    results, work_ns = run_batch(delays, ms)
    wall = time.perf_counter() - t0
    ok = report("python-asyncio", "single", opts, 1, delays, ms, results, work_ns,
                wall, calib_unit)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
