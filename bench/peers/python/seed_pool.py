#!/usr/bin/env python3
"""seed_pool: the usual Python workaround for asyncio's one core.

The reference experiment's task list is split, in order, into B equal
batches (default 5, as in the design brief: 5 x 2,000); a
ProcessPoolExecutor with P workers (default: the CPUs this process may run
on, as corio, Go and Tokio count them; os.cpu_count() would ignore taskset
and cpusets) is driven from the main event loop by loop.run_in_executor,
each worker runs asyncio.run on one batch, and the batch results are
concatenated in order. Batches are static, so B=5 on P=2 leaves one worker
alone with the last batch: the ~0.80 efficiency that work stealing has to
beat.

Wall time covers pool start-up, all batches and the gather (the whole cost
of the workaround). Workload, task body and report come from
seed_asyncio.py, so both Python peers measure the same thing: each worker
returns, with its batch's results, how long each task's summation took
(work_ns), and the lower bound uses the run's measured cost per unit.

Usage: seed_pool.py [--tasks N] [--work-scale K] [--seed S] [--loops P]
                    [--batches B] [--json] [--debug]
"""

import asyncio
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import seed_asyncio as seed


def split_in_order(items, batches):
    """B contiguous batches whose sizes differ by at most one."""
    q, r = divmod(len(items), batches)
    out, start = [], 0
    for b in range(batches):
        end = start + q + (1 if b < r else 0)
        out.append(items[start:end])
        start = end
    return out


async def drive(delays, ms, workers, batches):
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [loop.run_in_executor(pool, seed.run_batch, d, m)
                   for d, m in zip(split_in_order(delays, batches),
                                   split_in_order(ms, batches))]
        parts = await asyncio.gather(*futures)
    # Each part is (results, work_ns) for one batch, in task order.
    results = [r for part in parts for r in part[0]]
    work_ns = [w for part in parts for w in part[1]]
    return results, work_ns


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def main(argv):
    prog = "seed_pool"
    opts = seed.parse_args(prog, argv, {"tasks": 10000, "work_scale": 1.0,
                                        "seed": 1, "loops": usable_cpus(),
                                        "batches": 5}, extra=(" --batches B",))
    if opts["batches"] < 1:
        seed.die(prog, "--batches must be >= 1")
    delays, ms = seed.make_workload(opts["tasks"], opts["work_scale"], opts["seed"])
    if opts["debug"]:
        seed.print_checksum(delays, ms)
    calib_unit = seed.calibrate()
    t0 = time.perf_counter()
    results, work_ns = asyncio.run(drive(delays, ms, opts["loops"], opts["batches"]))
    wall = time.perf_counter() - t0
    ok = seed.report("python-pool", "batches", opts, opts["loops"], delays, ms,
                     results, work_ns, wall, calib_unit,
                     extra=',"batches":%d' % opts["batches"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
