package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"
)

// cluster is one membership implementation's members, all in this
// process.
type cluster interface {
	Size() int
	Name(i int) string
	// Kill stops member i without telling its peers, as a crash would.
	Kill(i int)
	// Restart brings member i back after Kill: a new incarnation with the
	// same name and address.
	Restart(i int) error
	// Converged reports whether every member sees every member alive, and
	// if not, how far from it the cluster is.
	Converged() (bool, string)
	// Counting lists the other members that count member i alive.
	Counting(i int) []string
	// Traffic is what all members sent so far.
	Traffic() traffic
	Stop()
}

// traffic counts what members sent.
type traffic struct {
	packets, bytes     uint64 // UDP datagrams and their payload bytes
	dials, streamBytes uint64 // TCP connections opened, and bytes both ways on them
	pushPulls          uint64 // memberlist's full state exchanges (over TCP)
}

func (t traffic) add(o traffic) traffic {
	return traffic{t.packets + o.packets, t.bytes + o.bytes, t.dials + o.dials, t.streamBytes + o.streamBytes, t.pushPulls + o.pushPulls}
}

func (t traffic) sub(o traffic) traffic {
	return traffic{t.packets - o.packets, t.bytes - o.bytes, t.dials - o.dials, t.streamBytes - o.streamBytes, t.pushPulls - o.pushPulls}
}

// loopback is the i-th address of 127.subnet.0.0/16: every member has an
// address of its own, as every node has.
func loopback(subnet byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, subnet, byte(i / 250), byte(i%250 + 1)})
}

// nodeNames are names as real clusters have them.
func nodeNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("worker-%03d.k8s.example.internal", i+1)
	}
	return names
}

// detector collects, for the member killed last, when each survivor that
// counted it alive saw it dead; every other death it hears of is a false
// one.
type detector struct {
	mu          sync.Mutex
	victim      string
	killed      time.Time // zero while no kill is being timed
	watchers    map[string]bool
	seen        map[string]time.Duration
	all         chan struct{} // closed once every watcher saw it
	falseDeaths int
}

func newDetector() *detector { return &detector{} }

// arm starts timing the death of victim at the watchers, the survivors
// that count it alive now; the kill must follow at once.
func (d *detector) arm(victim string, watchers []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.victim = victim
	d.watchers = make(map[string]bool, len(watchers))
	for _, w := range watchers {
		d.watchers[w] = true
	}
	d.seen = make(map[string]time.Duration, len(watchers))
	d.all = make(chan struct{})
	if len(watchers) == 0 {
		close(d.all)
	}
	d.killed = time.Now()
}

// dead records that observer saw subject dead at at.
func (d *detector) dead(observer, subject string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if subject != d.victim {
		d.falseDeaths++
		return
	}
	// Late word of the last victim, after its kill stopped being timed,
	// was already counted as missing; a survivor that counted it dead
	// before the kill is no watcher.
	if d.killed.IsZero() || !d.watchers[observer] {
		return
	}
	if _, ok := d.seen[observer]; ok {
		return
	}
	d.seen[observer] = at.Sub(d.killed)
	if len(d.seen) == len(d.watchers) {
		close(d.all)
	}
}

// collect waits at most limit for every watcher, stops timing, and
// returns each watcher's time, sorted (missing ones as never).
func (d *detector) collect(limit time.Duration) []time.Duration {
	d.mu.Lock()
	all := d.all
	d.mu.Unlock()
	select {
	case <-all:
	case <-time.After(limit):
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.killed = time.Time{}
	out := make([]time.Duration, 0, len(d.watchers))
	for _, l := range d.seen {
		out = append(out, l)
	}
	for len(out) < len(d.watchers) {
		out = append(out, never)
	}
	slices.Sort(out)
	return out
}

func (d *detector) falseCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.falseDeaths
}

// never stands for a survivor that did not see the kill within its limit.
const never = time.Duration(math.MaxInt64)

// waitConverged polls c until it converged, at most limit.
func waitConverged(c cluster, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	var state string
	for time.Since(start) < limit {
		var ok bool
		if ok, state = c.Converged(); ok {
			return time.Since(start), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%d members not all alive to each other within %v: %s", c.Size(), limit, state)
}

// kill is one timed kill: every survivor's time to see the victim dead.
type kill []time.Duration

func (k kill) median() time.Duration { return percentile(k, 0.5) }
func (k kill) every() time.Duration  { return k[len(k)-1] }

// failover is what the kills of one cluster measured.
type failover struct {
	kills []kill
	// deadAlready counts survivors that counted a victim dead before it was
	// killed (they are not timed); unconverged, the restarts after which
	// the cluster did not converge within its limit (the next kill went
	// ahead anyway).
	deadAlready, unconverged int
}

// killAll kills up to kills members one at a time, in an order that
// reaches every member once before any twice, times each death at every
// survivor that counted the victim alive, and restarts the victim and
// waits for the cluster to converge before the next kill. It stops early
// when budget is spent.
func killAll(c cluster, d *detector, kills int, limit, converge, settle, budget time.Duration) (failover, error) {
	var f failover
	n := c.Size()
	order := rand.New(rand.NewPCG(uint64(n), uint64(kills))).Perm(n)
	start := time.Now()
	for k := 0; k < kills && time.Since(start) < budget; k++ {
		i := order[k%n]
		watchers := c.Counting(i)
		f.deadAlready += n - 1 - len(watchers)
		d.arm(c.Name(i), watchers)
		c.Kill(i)
		times := kill(d.collect(limit))
		if len(times) > 0 {
			f.kills = append(f.kills, times)
		}
		restarted := time.Now()
		if err := c.Restart(i); err != nil {
			return f, err
		}
		conv := "converged"
		if _, err := waitConverged(c, converge); err != nil {
			f.unconverged++
			conv = err.Error()
		}
		if len(times) > 0 {
			progress("kill %d: %s seen dead by the median survivor after %s ms, by all %d after %s ms; restarted, %s after %v",
				k+1, c.Name(i), msString(times.median(), 1), len(times), msString(times.every(), 1), conv, time.Since(restarted).Round(time.Millisecond))
		}
		time.Sleep(settle)
	}
	return f, nil
}

// rest is what the cluster costs while nothing happens.
type rest struct {
	seconds float64
	sent    traffic
	cpu     time.Duration // of the whole process
	// late is the p99 of how late a 10 ms timer fired in this process
	// meanwhile: how starved of CPU the members were, by the machine's
	// other work or their own.
	late time.Duration
}

// atRest measures c over window.
func atRest(c cluster, window time.Duration) rest {
	t0, cpu0, tr0 := time.Now(), processCPU(), c.Traffic()
	var lateness []time.Duration
	for time.Since(t0) < window {
		at := time.Now()
		time.Sleep(10 * time.Millisecond)
		lateness = append(lateness, time.Since(at)-10*time.Millisecond)
	}
	t1, cpu1, tr1 := time.Now(), processCPU(), c.Traffic()
	slices.Sort(lateness)
	return rest{seconds: t1.Sub(t0).Seconds(), sent: tr1.sub(tr0), cpu: cpu1 - cpu0, late: percentile(lateness, 0.99)}
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile is the nearest-rank p-quantile of sorted xs: with fewer than
// 100 values, p99 is the largest.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return never
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// summary is the median and p99 of one time per kill.
func summary(kills []kill, of func(kill) time.Duration) (median, p99 time.Duration) {
	xs := make([]time.Duration, len(kills))
	for i, k := range kills {
		xs[i] = of(k)
	}
	slices.Sort(xs)
	return percentile(xs, 0.5), percentile(xs, 0.99)
}
