//! seed-tokio: the Tokio peer in corio's side-by-side benchmark (bench/compare).
//!
//! It runs the design brief's "reference experiment" (10,000 tasks, each
//! sleeps 0.2-1.0 s then sums the integers below m) with one `tokio::spawn`
//! per task on a multi-thread runtime of `--loops` workers, joins the handles
//! in task order, and also runs four micro benchmarks. The workload is drawn
//! bit-exactly like the C, Go and Python peers (splitmix64, same draw order,
//! same rounding); `--debug` prints a checksum of it on stderr. Like
//! corio-demo, each task times its own summation and the lower bound uses the
//! run's measured ns per unit (sum of work_ns / sum of units); the pre-run
//! calibration is only reported (calib_unit_ns).
//!
//! Usage:
//!   seed-tokio [--tasks N] [--work-scale K] [--seed S] [--loops P] [--json] [--debug]
//!   seed-tokio bench NAME [--loops P]
//!                           NAME: spawn_join_ns | set_as_completed_ns | yield_ns | chan_select_ns |
//!                                 mutex_pair_ns | rwlock_read_pair_ns | process_spawn_wait_us | sleepers_1m
//!                           (sleepers_1m_wall_s / sleepers_1m_rss_mb are
//!                           aliases of sleepers_1m; it prints both lines).
//!                           spawn_join and sleepers run P workers (default:
//!                           available_parallelism), so bench/compare can
//!                           give them corio's loop count; yield and
//!                           chan_select always run on a current_thread runtime.
//!
//! Written for Debian 12's rustc 1.63, where `std::hint::black_box` is not
//! yet stable (1.66): `opaque` below is the same idea, an empty asm statement
//! the optimiser must assume reads and rewrites the accumulator.

use std::arch::asm;
use std::process::exit;
use std::time::{Duration, Instant};

struct Options {
    tasks: usize,
    scale: f64,
    seed: u64,
    loops: usize,
    json: bool,
    debug: bool,
}

fn die(msg: &str) -> ! {
    eprintln!("seed-tokio: {}", msg);
    exit(2);
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hide a value from the optimiser: it must assume the asm read and changed
/// it, so the loop can be neither vectorised nor folded into m(m-1)/2. The
/// value stays in a register (black_box in later Rust spills it to memory,
/// which costs a store-forward per iteration); this keeps one add per
/// iteration, like the Go and C loops.
#[inline(always)]
fn opaque(x: &mut u64) {
    unsafe { asm!("/* {0} */", inout(reg) *x, options(nomem, nostack, preserves_flags)) }
}

/// The "parsing" work: sum of 0..m, one opaque add per iteration.
#[inline(never)]
fn sum_below(m: u64) -> u64 {
    let mut s: u64 = 0;
    let mut i: u64 = 0;
    while i < m {
        s = s.wrapping_add(i);
        opaque(&mut s);
        i += 1;
    }
    s
}

/// m(m-1)/2 in wrapping u64 without overflowing the intermediate product.
fn triangle(m: u64) -> u64 {
    if m == 0 {
        0
    } else if m % 2 == 0 {
        (m / 2).wrapping_mul(m - 1)
    } else {
        m.wrapping_mul((m - 1) / 2)
    }
}

/// ns per loop iteration of sum_below, single-threaded: best of 3 x 20M.
fn calibrate() -> f64 {
    const UNITS: u64 = 20_000_000;
    let mut best = f64::INFINITY;
    let mut sink = 0u64;
    for _ in 0..3 {
        let t0 = Instant::now();
        sink ^= sum_below(UNITS);
        let d = t0.elapsed().as_nanos() as f64 / UNITS as f64;
        best = best.min(d);
    }
    opaque(&mut sink);
    best
}

fn default_loops() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn parse_args(args: &[String]) -> Options {
    let mut o = Options { tasks: 10000, scale: 10.0, seed: 1, loops: default_loops(), json: false, debug: false };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (name, inline_val) = match a.find('=') {
            Some(eq) if a.starts_with("--") => (&a[..eq], Some(a[eq + 1..].to_string())),
            _ => (a, None),
        };
        let mut value = || -> String {
            if let Some(v) = inline_val.clone() {
                return v;
            }
            i += 1;
            match args.get(i) {
                Some(v) => v.clone(),
                None => die(&format!("option {} needs a value", name)),
            }
        };
        let bad = |v: &str| -> ! { die(&format!("bad value for {}: {:?}", name, v)) };
        match name {
            "--tasks" => {
                let v = value();
                o.tasks = match v.parse::<usize>() { Ok(n) if n >= 1 => n, _ => bad(&v) };
            }
            "--work-scale" => {
                let v = value();
                o.scale = match v.parse::<f64>() { Ok(k) if k.is_finite() && k >= 0.0 => k, _ => bad(&v) };
            }
            "--seed" => {
                let v = value();
                o.seed = match v.parse::<u64>() { Ok(s) => s, _ => bad(&v) };
            }
            "--loops" => {
                let v = value();
                o.loops = match v.parse::<usize>() { Ok(p) if (1..=4096).contains(&p) => p, _ => bad(&v) };
            }
            "--json" => o.json = true,
            "--debug" => o.debug = true,
            _ => die(&format!(
                "unknown option {:?} (try --tasks N --work-scale K --seed S --loops P --json --debug, or: bench NAME)",
                a
            )),
        }
        i += 1;
    }
    o
}

/// Workload fingerprint shared by all peers: count, sums of m and delay, and
/// h = (h ^ m) * 0x100000001B3 from 0xCBF29CE484222325 (wrapping u64).
fn print_checksum(delays: &[u64], ms: &[u64]) {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let (mut msum, mut dsum) = (0u64, 0u64);
    for (d, m) in delays.iter().zip(ms) {
        h = (h ^ m).wrapping_mul(0x0000_0100_0000_01B3);
        msum = msum.wrapping_add(*m);
        dsum = dsum.wrapping_add(*d);
    }
    eprintln!(
        "{{\"debug\":\"workload\",\"tasks\":{},\"m_sum\":{},\"delay_sum\":{},\"m_hash\":\"{:016x}\"}}",
        ms.len(),
        msum,
        dsum,
        h
    );
}

fn run_seed(o: &Options) {
    let n = o.tasks;
    let mut delays = Vec::with_capacity(n);
    let mut ms = Vec::with_capacity(n);
    let mut state = o.seed;
    for _ in 0..n {
        delays.push(200_000_000 + splitmix64(&mut state) % 800_000_001);
        let nn = 100_000 + splitmix64(&mut state) % 400_001;
        ms.push(((nn as f64) * o.scale + 0.5).floor() as u64);
    }
    if o.debug {
        print_checksum(&delays, &ms);
    }

    // Reference only: the bound uses the cost measured during the run, as
    // this host's CPU speed drifts (up to 2x within a minute).
    let calib = calibrate();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.loops)
        .enable_time()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let (d2, m2) = (delays.clone(), ms.clone());
    let t0 = Instant::now();
    // Each task returns (sum, work_ns): it times its own summation with the
    // monotonic Instant, from right after the sleep to right after the sum.
    // The spawns and joins run in a task on a worker, as corio's main task
    // runs on a loop and Go's main goroutine on a P: block_on's future runs
    // on the main thread, one more thread than the `loops` the bound assumes.
    let results: Vec<(u64, u64)> = rt.block_on(async move { tokio::spawn(async move {
        let handles: Vec<_> = d2
            .iter()
            .zip(m2.iter())
            .map(|(&d, &m)| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_nanos(d)).await;
                    let w0 = Instant::now();
                    let sum = sum_below(m);
                    (sum, w0.elapsed().as_nanos() as u64)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("task panicked"));
        }
        out
    }).await.expect("task panicked") });
    let wall = t0.elapsed().as_secs_f64();
    drop(rt);

    let ok = results.iter().zip(&ms).all(|(&(r, _), &m)| r == triangle(m));
    // unit = sum(work_ns) / sum(units): this run's own cost per unit.
    let sum_work: f64 = results.iter().map(|&(_, ns)| ns as f64).sum();
    let sum_units: f64 = ms.iter().map(|&m| m as f64).sum();
    let unit = if sum_units > 0.0 { sum_work / sum_units } else { 0.0 };
    let (mut max_io_cpu, mut min_io, mut sum_cpu) = (0.0f64, f64::INFINITY, 0.0f64);
    for (&d, &m) in delays.iter().zip(&ms) {
        let io = d as f64;
        let cpu = m as f64 * unit;
        max_io_cpu = max_io_cpu.max(io + cpu);
        min_io = min_io.min(io);
        sum_cpu += cpu;
    }
    let bound = max_io_cpu.max(min_io + sum_cpu / o.loops as f64) / 1e9;
    let eff = if wall > 0.0 { bound / wall } else { 0.0 };
    if o.json {
        println!(
            "{{\"system\":\"tokio\",\"mode\":\"steal\",\"loops\":{},\"tasks\":{},\"work_scale\":{},\"seed\":{},\
             \"results_ok\":{},\"wall_s\":{:.4},\"bound_s\":{:.4},\"efficiency\":{:.4},\"cpu_s\":{:.4},\
             \"unit_ns\":{:.5},\"calib_unit_ns\":{:.5}}}",
            o.loops, n, o.scale, o.seed, ok, wall, bound, eff, sum_cpu / 1e9, unit, calib
        );
    } else {
        println!(
            "tokio steal: loops={} tasks={} work_scale={} seed={} results_ok={} wall={:.3}s bound={:.3}s \
             efficiency={:.3} cpu={:.3}s unit={:.4}ns (measured in the run) calib_unit={:.4}ns",
            o.loops, n, o.scale, o.seed, ok, wall, bound, eff, sum_cpu / 1e9, unit, calib
        );
    }
    if !ok {
        exit(1);
    }
}

fn print_bench(name: &str, value: f64, unit: &str) {
    println!("{{\"bench\":\"{}\",\"value\":{:.3},\"unit\":\"{}\"}}", name, value, unit);
}

fn multi_thread_runtime(loops: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loops)
        .enable_time()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)))
}

/// From inside one task, spawn 1M empty tasks keeping their JoinHandles,
/// then await them in order. Spawning from a worker task (not from
/// block_on) uses the worker's local queue, the normal Tokio fast path.
fn bench_spawn_join(loops: usize) {
    const COUNT: usize = 1_000_000;
    let rt = multi_thread_runtime(loops);
    let elapsed = rt.block_on(async {
        tokio::spawn(async {
            let mut handles = Vec::with_capacity(COUNT);
            let t0 = Instant::now();
            for _ in 0..COUNT {
                handles.push(tokio::spawn(async {}));
            }
            for h in handles {
                h.await.expect("task panicked");
            }
            t0.elapsed()
        })
        .await
        .expect("task panicked")
    });
    print_bench("spawn_join_ns", elapsed.as_nanos() as f64 / COUNT as f64, "ns");
}

/// The same 1M empty tasks spawned into a JoinSet and taken back as they
/// finish (join_next): Tokio's as_completed.
fn bench_set_as_completed(loops: usize) {
    const COUNT: usize = 1_000_000;
    let rt = multi_thread_runtime(loops);
    let elapsed = rt.block_on(async {
        tokio::spawn(async {
            let mut set = tokio::task::JoinSet::new();
            let t0 = Instant::now();
            for _ in 0..COUNT {
                set.spawn(async {});
            }
            let mut taken = 0;
            while let Some(r) = set.join_next().await {
                r.expect("task panicked");
                taken += 1;
            }
            if taken != COUNT {
                die(&format!("join_next gave {} tasks of {}", taken, COUNT));
            }
            t0.elapsed()
        })
        .await
        .expect("task panicked")
    });
    print_bench("set_as_completed_ns", elapsed.as_nanos() as f64 / COUNT as f64, "ns");
}

/// A free tokio::sync::Mutex locked and unlocked 10M times by one task on
/// a current_thread runtime (corio-bench mutex_pair_ns). ns per pair.
fn bench_mutex() {
    const COUNT: u32 = 10_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let elapsed = rt.block_on(async {
        let m = tokio::sync::Mutex::new(0u64);
        let t0 = Instant::now();
        for _ in 0..COUNT {
            let mut g = m.lock().await;
            *g += 1;
        }
        let n = *m.lock().await;
        if n != COUNT as u64 {
            die(&format!("mutex count {} of {}", n, COUNT));
        }
        t0.elapsed()
    });
    print_bench("mutex_pair_ns", elapsed.as_nanos() as f64 / COUNT as f64, "ns");
}

/// A free tokio::sync::RwLock's read lock taken and given back 10M times
/// by one task on a current_thread runtime (corio-bench
/// rwlock_read_pair_ns). ns per pair.
fn bench_rwlock() {
    const COUNT: u32 = 10_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let elapsed = rt.block_on(async {
        let rw = tokio::sync::RwLock::new(0u64);
        let mut sum = 0u64;
        let t0 = Instant::now();
        for _ in 0..COUNT {
            let g = rw.read().await;
            sum += *g + 1;
        }
        if sum != COUNT as u64 {
            die(&format!("rwlock reads {} of {}", sum, COUNT));
        }
        t0.elapsed()
    });
    print_bench("rwlock_read_pair_ns", elapsed.as_nanos() as f64 / COUNT as f64, "ns");
}

/// 2,000 runs of /bin/true, 16 at a time, each started and awaited by
/// tokio::process::Command::status in a task (corio-bench
/// process_spawn_wait_us). Wall us per process.
fn bench_process(loops: usize) {
    const COUNT: usize = 2000;
    const WORKERS: usize = 16;
    // The child reaper listens for SIGCHLD: the IO and signal driver.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loops)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let elapsed = rt.block_on(async {
        let t0 = Instant::now();
        let mut workers = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            workers.push(tokio::spawn(async {
                for _ in 0..COUNT / WORKERS {
                    let status = tokio::process::Command::new("/bin/true")
                        .status()
                        .await
                        .unwrap_or_else(|e| die(&format!("/bin/true: {}", e)));
                    if !status.success() {
                        die(&format!("/bin/true: {}", status));
                    }
                }
            }));
        }
        for w in workers {
            w.await.expect("task panicked");
        }
        t0.elapsed()
    });
    print_bench("process_spawn_wait_us", elapsed.as_micros() as f64 / COUNT as f64, "us");
}

/// Two tasks on a current_thread runtime. Ping sends on two capacity-1
/// channels in turn and waits for the reply; pong waits in `tokio::select!`
/// over both and replies (corio-bench chan_select_ns). ns per round trip.
fn bench_select() {
    const COUNT: u64 = 1_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let elapsed = rt.block_on(async {
        let (tx0, mut rx0) = tokio::sync::mpsc::channel::<u64>(1);
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<u64>(1);
        let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let pong = tokio::spawn(async move {
            loop {
                let v = tokio::select! {
                    v = rx0.recv() => v,
                    v = rx1.recv() => v,
                };
                match v {
                    Some(v) => {
                        if reply_tx.send(v).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
        });
        let t0 = Instant::now();
        for i in 0..COUNT {
            let tx = if i & 1 == 0 { &tx0 } else { &tx1 };
            tx.send(i).await.unwrap_or_else(|_| die("select ping-pong: pong ended"));
            match reply_rx.recv().await {
                Some(v) if v == i => {}
                _ => die("select ping-pong: wrong reply"),
            }
        }
        let elapsed = t0.elapsed();
        drop(tx0);
        drop(tx1);
        pong.await.expect("task panicked");
        elapsed
    });
    print_bench("chan_select_ns", elapsed.as_nanos() as f64 / COUNT as f64, "ns");
}

/// Two tasks on a current_thread runtime, each yielding 5M times.
fn bench_yield() {
    const PER_TASK: u64 = 5_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| die(&format!("cannot build the runtime: {}", e)));
    let elapsed = rt.block_on(async {
        let t0 = Instant::now();
        let spin = || async {
            for _ in 0..PER_TASK {
                tokio::task::yield_now().await;
            }
        };
        let a = tokio::spawn(spin());
        let b = tokio::spawn(spin());
        a.await.expect("task panicked");
        b.await.expect("task panicked");
        t0.elapsed()
    });
    print_bench("yield_ns", elapsed.as_nanos() as f64 / (2 * PER_TASK) as f64, "ns");
}

/// 1M tasks each sleeping 1 s, spawned from one task and joined in order.
/// Prints the wall time and the process's peak RSS.
///
/// Each task creates its Sleep when it first runs, as corio's and Go's
/// tasks start their sleep when they first run: `sleep(d)` fixes its
/// deadline at now + d when it is called, so a Sleep made by the spawning
/// loop would start every task's second during the spawn phase, hiding up
/// to the whole spawn time inside the sleep that the other systems pay on
/// top of it.
fn bench_sleepers(loops: usize) {
    const COUNT: usize = 1_000_000;
    let rt = multi_thread_runtime(loops);
    let elapsed = rt.block_on(async {
        tokio::spawn(async {
            let mut handles = Vec::with_capacity(COUNT);
            let t0 = Instant::now();
            for _ in 0..COUNT {
                handles.push(tokio::spawn(async { tokio::time::sleep(Duration::from_secs(1)).await }));
            }
            for h in handles {
                h.await.expect("task panicked");
            }
            t0.elapsed()
        })
        .await
        .expect("task panicked")
    });
    print_bench("sleepers_1m_wall_s", elapsed.as_secs_f64(), "s");
    print_bench("sleepers_1m_rss_mb", peak_rss_mib(), "MB");
}

/// VmHWM from /proc/self/status (kB), in MiB; -1 when unavailable.
fn peak_rss_mib() -> f64 {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(_) => return -1.0,
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(-1.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("bench" | "--bench" | "--only")) {
        if args.len() < 2 || args[1] == "--loops" {
            die("usage: seed-tokio bench spawn_join_ns|set_as_completed_ns|yield_ns|chan_select_ns|mutex_pair_ns|rwlock_read_pair_ns|process_spawn_wait_us|sleepers_1m [--loops P]");
        }
        // Only --loops, parsed and checked as for the seed run.
        for a in &args[2..] {
            if a.starts_with("--") && a != "--loops" && !a.starts_with("--loops=") {
                die(&format!("bench {} takes only --loops P, got {:?}", args[1], a));
            }
        }
        let loops = parse_args(&args[2..]).loops;
        match args[1].as_str() {
            "spawn_join" | "spawn_join_ns" => bench_spawn_join(loops),
            "set_as_completed" | "set_as_completed_ns" => bench_set_as_completed(loops),
            "yield" | "yield_ns" => bench_yield(),
            "select" | "chan_select_ns" => bench_select(),
            "process" | "process_spawn_wait_us" => bench_process(loops),
            "mutex" | "mutex_pair_ns" => bench_mutex(),
            "rwlock" | "rwlock_read_pair_ns" => bench_rwlock(),
            "sleepers" | "sleepers_1m" | "sleepers_1m_wall_s" | "sleepers_1m_rss_mb" => bench_sleepers(loops),
            other => die(&format!("unknown bench {:?} (spawn_join_ns, set_as_completed_ns, yield_ns, chan_select_ns, mutex_pair_ns, rwlock_read_pair_ns, process_spawn_wait_us, sleepers_1m)", other)),
        }
        return;
    }
    run_seed(&parse_args(&args));
}
