// seed-go: the Go peer in corio's side-by-side benchmark (bench/compare).
//
// It runs the design brief's "reference experiment" (10,000 tasks, each
// sleeps 0.2-1.0 s then sums integers below m) with one goroutine per task
// on GOMAXPROCS = --loops threads, plus four micro benchmarks. Like
// corio-demo, each task times its own summation; the lower bound uses the
// run's measured ns per unit (sum of work_ns / sum of units), and the
// pre-run calibration is only reported (calib_unit_ns). The workload
// is generated bit-exactly like the C, Rust and Python peers (splitmix64,
// same draw order, same rounding), so the same seed gives the same tasks in
// every language; --debug prints a checksum of them on stderr to check that.
//
// Usage:
//
//	seed-go [--tasks N] [--work-scale K] [--seed S] [--loops P] [--json] [--debug]
//	seed-go bench NAME [--loops P]
//	                       NAME: spawn_join_ns | set_as_completed_ns | yield_ns | chan_select_ns |
//	                             mutex_pair_ns | rwlock_read_pair_ns |
//	                             process_spawn_wait_us | sleepers_1m
//	                       (sleepers_1m_wall_s / sleepers_1m_rss_mb are
//	                       aliases of sleepers_1m; it prints both lines).
//	                       spawn_join and sleepers run on GOMAXPROCS = P
//	                       (default: the CPUs this process may run on), so
//	                       bench/compare can give them corio's loop count;
//	                       yield always runs on one thread.
package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	_ "unsafe" // go:linkname
)

type options struct {
	tasks int
	scale float64
	seed  uint64
	loops int
	json  bool
	debug bool
}

// die reports a usage error on one line and exits 2, as every peer does.
func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "seed-go: "+format+"\n", a...)
	os.Exit(2)
}

func splitmix64(state *uint64) uint64 {
	*state += 0x9E3779B97F4A7C15
	z := *state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// sumBelow is the "parsing" work. The gc compiler neither vectorises this
// loop nor rewrites it as m(m-1)/2 (checked with `go tool objdump`: a
// scalar LEAQ/ADDQ/MOVQ/CMPQ/JA loop, one add per iteration), and
// noinline keeps calibration and tasks on the very same machine code.
//
// nosplit: no stack-check prologue and no asynchronous safe point, so the
// scheduler cannot preempt a goroutine inside its sum. Each task times its
// own summation (below); with preemption points inside the timed span, a
// goroutine whose time slice ran out (woken sleepers inherit the slice of
// the goroutine they follow, via runnext) was parked on the global run
// queue mid-measurement, and its work_ns counted the wait behind every
// other woken goroutine: 10-30x the real cost per unit at work_scale 10.
// The sums are 0.1-6 ms, so this is what the cooperative runtimes (corio,
// Tokio) do too: a task runs its sum to the end.
//
//go:noinline
//go:nosplit
func sumBelow(m uint64) uint64 {
	var s uint64
	for i := uint64(0); i < m; i++ {
		s += i
	}
	return s
}

// triangle is m(m-1)/2 in wrapping u64 arithmetic without overflowing the
// intermediate product (halve the even factor first).
func triangle(m uint64) uint64 {
	if m == 0 {
		return 0
	}
	if m%2 == 0 {
		return (m / 2) * (m - 1)
	}
	return m * ((m - 1) / 2)
}

var sink uint64

// nanotime is the runtime's monotonic clock (what time.Since uses). It is
// nosplit, so unlike time.Now/time.Since it has no preemption point before
// it reads the clock: the timed span [nanotime, sumBelow, nanotime] holds
// no point where the goroutine can be descheduled by Go's scheduler.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// calibrate returns ns per loop iteration of sumBelow, single-threaded:
// the best of 3 runs over 20M iterations.
func calibrate() float64 {
	const units = 20000000
	best := math.Inf(1)
	for r := 0; r < 3; r++ {
		t0 := time.Now()
		sink ^= sumBelow(units)
		d := float64(time.Since(t0).Nanoseconds()) / units
		if d < best {
			best = d
		}
	}
	return best
}

func parseArgs(args []string) options {
	o := options{tasks: 10000, scale: 10, seed: 1, loops: runtime.NumCPU()}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := a, "", false
		if eq := strings.IndexByte(a, '='); eq > 0 && strings.HasPrefix(a, "--") {
			name, val, hasVal = a[:eq], a[eq+1:], true
		}
		need := func() string {
			if hasVal {
				return val
			}
			if i+1 >= len(args) {
				die("option %s needs a value", name)
			}
			i++
			return args[i]
		}
		var err error
		switch name {
		case "--tasks":
			var v int64
			v, err = strconv.ParseInt(need(), 10, 64)
			if err == nil && v < 1 {
				die("--tasks must be >= 1")
			}
			o.tasks = int(v)
		case "--work-scale":
			o.scale, err = strconv.ParseFloat(need(), 64)
			if err == nil && (!(o.scale >= 0) || math.IsInf(o.scale, 0)) {
				die("--work-scale must be a finite number >= 0")
			}
		case "--seed":
			o.seed, err = strconv.ParseUint(need(), 10, 64)
		case "--loops":
			var v int64
			v, err = strconv.ParseInt(need(), 10, 64)
			if err == nil && (v < 1 || v > 4096) {
				die("--loops must be in 1..4096")
			}
			o.loops = int(v)
		case "--json":
			o.json = true
		case "--debug":
			o.debug = true
		default:
			die("unknown option %q (try --tasks N --work-scale K --seed S --loops P --json --debug, or: bench NAME)", a)
		}
		if err != nil {
			die("bad value for %s: %v", name, err)
		}
	}
	return o
}

func fmtScale(k float64) string { return strconv.FormatFloat(k, 'g', -1, 64) }

func runSeed(o options) {
	runtime.GOMAXPROCS(o.loops)
	n := o.tasks
	delays := make([]uint64, n)
	ms := make([]uint64, n)
	state := o.seed
	for i := 0; i < n; i++ {
		delays[i] = 200000000 + splitmix64(&state)%800000001
		nn := 100000 + splitmix64(&state)%400001
		// The explicit float64() conversion forbids fusing into an FMA,
		// so the rounding matches the other languages exactly.
		ms[i] = uint64(math.Floor(float64(float64(nn)*o.scale) + 0.5))
	}
	if o.debug {
		printChecksum(delays, ms)
	}

	// Reference only: the bound uses the cost measured during the run, as
	// this host's CPU speed drifts (up to 2x within a minute).
	calib := calibrate()

	results := make([]uint64, n)
	workNs := make([]int64, n)
	var wg sync.WaitGroup
	wg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func(i int) {
			time.Sleep(time.Duration(delays[i]))
			// Each task times its own summation on the monotonic
			// clock, with no preemption point in between (see
			// nanotime and sumBelow).
			w0 := nanotime()
			s := sumBelow(ms[i])
			workNs[i] = nanotime() - w0
			results[i] = s
			wg.Done()
		}(i)
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()

	ok := true
	for i := 0; i < n; i++ {
		if results[i] != triangle(ms[i]) {
			ok = false
		}
	}
	// unit = sum(work_ns) / sum(units): this run's own cost per unit.
	var sumWork, sumUnits float64
	for i := 0; i < n; i++ {
		sumWork += float64(workNs[i])
		sumUnits += float64(ms[i])
	}
	unit := 0.0
	if sumUnits > 0 {
		unit = sumWork / sumUnits
	}
	maxIoCpu, minIo, sumCpu := 0.0, math.Inf(1), 0.0
	for i := 0; i < n; i++ {
		io := float64(delays[i])
		cpu := float64(ms[i]) * unit
		maxIoCpu = math.Max(maxIoCpu, io+cpu)
		minIo = math.Min(minIo, io)
		sumCpu += cpu
	}
	bound := math.Max(maxIoCpu, minIo+sumCpu/float64(o.loops)) / 1e9
	eff := 0.0
	if wall > 0 {
		eff = bound / wall
	}
	if o.json {
		fmt.Printf("{\"system\":\"go\",\"mode\":\"steal\",\"loops\":%d,\"tasks\":%d,\"work_scale\":%s,\"seed\":%d,"+
			"\"results_ok\":%t,\"wall_s\":%.4f,\"bound_s\":%.4f,\"efficiency\":%.4f,\"cpu_s\":%.4f,"+
			"\"unit_ns\":%.5f,\"calib_unit_ns\":%.5f}\n",
			o.loops, n, fmtScale(o.scale), o.seed, ok, wall, bound, eff, sumCpu/1e9, unit, calib)
	} else {
		fmt.Printf("go steal: loops=%d tasks=%d work_scale=%s seed=%d results_ok=%t wall=%.3fs bound=%.3fs "+
			"efficiency=%.3f cpu=%.3fs unit=%.4fns (measured in the run) calib_unit=%.4fns\n",
			o.loops, n, fmtScale(o.scale), o.seed, ok, wall, bound, eff, sumCpu/1e9, unit, calib)
	}
	if !ok {
		os.Exit(1)
	}
}

// printChecksum writes the workload fingerprint shared by all peers:
// count, sums of m and delay, and FNV-1a-style hash over the m values
// (h = (h ^ m) * 0x100000001B3, from 0xCBF29CE484222325, wrapping u64).
func printChecksum(delays, ms []uint64) {
	h := uint64(0xCBF29CE484222325)
	var msum, dsum uint64
	for i := range ms {
		h = (h ^ ms[i]) * 0x100000001B3
		msum += ms[i]
		dsum += delays[i]
	}
	fmt.Fprintf(os.Stderr, "{\"debug\":\"workload\",\"tasks\":%d,\"m_sum\":%d,\"delay_sum\":%d,\"m_hash\":\"%016x\"}\n",
		len(ms), msum, dsum, h)
}

func printBench(name string, value float64, unit string) {
	fmt.Printf("{\"bench\":\"%s\",\"value\":%.3f,\"unit\":\"%s\"}\n", name, value, unit)
}

// benchSpawnJoin: from inside one goroutine, start 1M empty goroutines,
// keeping a handle to each (a channel the goroutine closes: Go has no join
// handle, this is the closest equivalent), then wait on them in order.
func benchSpawnJoin(loops int) {
	const count = 1000000
	runtime.GOMAXPROCS(loops)
	out := make(chan time.Duration)
	go func() {
		handles := make([]chan struct{}, count)
		t0 := time.Now()
		for i := range handles {
			c := make(chan struct{})
			handles[i] = c
			go func() { close(c) }()
		}
		for _, c := range handles {
			<-c
		}
		out <- time.Since(t0)
	}()
	printBench("spawn_join_ns", float64((<-out).Nanoseconds())/count, "ns")
}

// benchSetAsCompleted: the same 1M empty goroutines, taken back as they
// finish. Go has no join set: each goroutine sends on one channel with
// room for all of them, and the spawner receives 1M times.
func benchSetAsCompleted(loops int) {
	const count = 1000000
	runtime.GOMAXPROCS(loops)
	out := make(chan time.Duration)
	go func() {
		done := make(chan struct{}, count)
		t0 := time.Now()
		for i := 0; i < count; i++ {
			go func() { done <- struct{}{} }()
		}
		for i := 0; i < count; i++ {
			<-done
		}
		out <- time.Since(t0)
	}()
	printBench("set_as_completed_ns", float64((<-out).Nanoseconds())/count, "ns")
}

// benchSelect: two goroutines on one thread. Ping sends on two
// capacity-1 channels in turn and waits for the reply; pong selects over
// both and replies. ns per round trip (corio-bench chan_select_ns).
func benchSelect() {
	const count = 1000000
	runtime.GOMAXPROCS(1)
	in0, in1 := make(chan int, 1), make(chan int, 1)
	reply := make(chan int, 1)
	go func() {
		for {
			var v int
			var ok bool
			select {
			case v, ok = <-in0:
			case v, ok = <-in1:
			}
			if !ok {
				return
			}
			reply <- v
		}
	}()
	t0 := time.Now()
	for i := 0; i < count; i++ {
		if i&1 == 0 {
			in0 <- i
		} else {
			in1 <- i
		}
		if v := <-reply; v != i {
			die("select ping-pong: got %d, want %d", v, i)
		}
	}
	elapsed := time.Since(t0)
	close(in0)
	printBench("chan_select_ns", float64(elapsed.Nanoseconds())/count, "ns")
}

// benchProcess: 2,000 runs of /bin/true, 16 at a time, each started and
// waited for by exec.Cmd.Run in a goroutine (corio-bench
// process_spawn_wait_us). Wall us per process.
func benchProcess(loops int) {
	const count, workers = 2000, 16
	runtime.GOMAXPROCS(loops)
	var wg sync.WaitGroup
	wg.Add(workers)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for i := 0; i < count/workers; i++ {
				if err := exec.Command("/bin/true").Run(); err != nil {
					die("/bin/true: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	printBench("process_spawn_wait_us", float64(time.Since(t0).Microseconds())/count, "us")
}

// benchMutex: a free sync.Mutex locked and unlocked 10M times by one
// goroutine (corio-bench mutex_pair_ns). ns per pair.
func benchMutex() {
	const count = 10000000
	runtime.GOMAXPROCS(1)
	var mu sync.Mutex
	t0 := time.Now()
	for i := 0; i < count; i++ {
		mu.Lock()
		mu.Unlock()
	}
	printBench("mutex_pair_ns", float64(time.Since(t0).Nanoseconds())/count, "ns")
}

// benchRWMutex: a free sync.RWMutex's read lock taken and given back 10M
// times by one goroutine (corio-bench rwlock_read_pair_ns). ns per pair.
func benchRWMutex() {
	const count = 10000000
	runtime.GOMAXPROCS(1)
	var mu sync.RWMutex
	t0 := time.Now()
	for i := 0; i < count; i++ {
		mu.RLock()
		mu.RUnlock()
	}
	printBench("rwlock_read_pair_ns", float64(time.Since(t0).Nanoseconds())/count, "ns")
}

// benchYield: two goroutines on one thread, each yielding 5M times.
func benchYield() {
	const perTask = 5000000
	runtime.GOMAXPROCS(1)
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	for t := 0; t < 2; t++ {
		go func() {
			for i := 0; i < perTask; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	printBench("yield_ns", float64(time.Since(t0).Nanoseconds())/(2*perTask), "ns")
}

// benchSleepers: 1M goroutines each sleeping 1 s, joined with one
// WaitGroup (the idiomatic Go join; a channel per goroutine would add
// ~100 MB that is not the runtime's own cost). Reports wall and peak RSS.
func benchSleepers(loops int) {
	const count = 1000000
	runtime.GOMAXPROCS(loops)
	var wg sync.WaitGroup
	wg.Add(count)
	t0 := time.Now()
	for i := 0; i < count; i++ {
		go func() {
			time.Sleep(time.Second)
			wg.Done()
		}()
	}
	wg.Wait()
	printBench("sleepers_1m_wall_s", time.Since(t0).Seconds(), "s")
	printBench("sleepers_1m_rss_mb", peakRSSMiB(), "MB")
}

// peakRSSMiB reads VmHWM from /proc/self/status (kB) and returns MiB.
func peakRSSMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmHWM:") {
			fields := strings.Fields(line[len("VmHWM:"):])
			if len(fields) > 0 {
				kb, err := strconv.ParseFloat(fields[0], 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	return -1
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "bench" || args[0] == "--bench" || args[0] == "--only") {
		if len(args) < 2 || args[1] == "--loops" {
			die("usage: seed-go bench spawn_join_ns|set_as_completed_ns|yield_ns|chan_select_ns|mutex_pair_ns|rwlock_read_pair_ns|process_spawn_wait_us|sleepers_1m [--loops P]")
		}
		// Only --loops, parsed and checked as for the seed run.
		for _, a := range args[2:] {
			if a != "--loops" && !strings.HasPrefix(a, "--loops=") && strings.HasPrefix(a, "--") {
				die("bench %s takes only --loops P, got %q", args[1], a)
			}
		}
		o := parseArgs(args[2:])
		switch args[1] {
		case "spawn_join", "spawn_join_ns":
			benchSpawnJoin(o.loops)
		case "set_as_completed", "set_as_completed_ns":
			benchSetAsCompleted(o.loops)
		case "yield", "yield_ns":
			benchYield()
		case "select", "chan_select_ns":
			benchSelect()
		case "process", "process_spawn_wait_us":
			benchProcess(o.loops)
		case "mutex", "mutex_pair_ns":
			benchMutex()
		case "rwlock", "rwlock_read_pair_ns":
			benchRWMutex()
		case "sleepers", "sleepers_1m", "sleepers_1m_wall_s", "sleepers_1m_rss_mb":
			benchSleepers(o.loops)
		default:
			die("unknown bench %q (spawn_join_ns, set_as_completed_ns, yield_ns, chan_select_ns, mutex_pair_ns, rwlock_read_pair_ns, process_spawn_wait_us, sleepers_1m)", args[1])
		}
		return
	}
	runSeed(parseArgs(args))
}
