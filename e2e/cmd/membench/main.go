// Command membench measures the speakers' heartbeat membership
// (speaker/member) against github.com/hashicorp/memberlist, the SWIM
// library MetalLB's speakers use, with every member of a cluster in this one
// process on loopback, each on an address of its own:
//
//   - failover: a member is killed without a leave (Crash; memberlist:
//     Shutdown without Leave) and every survivor's time to see it dead is
//     taken, as the speaker learns it (Changes and View; memberlist:
//     NotifyLeave, which MetalLB reacts to), for about 20 kills per size;
//   - cost at rest: UDP datagrams (and their bytes) and TCP connections sent
//     per member, and the process's CPU time (getrusage) per member, over a
//     quiet window.
//
// It lives in the e2e module so that memberlist never enters the product's
// go.mod. It needs no root. Run it with make bench, or cd e2e && go run
// ./cmd/membench; the tables go to stdout, progress to stderr.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ironlb/ironlb/speaker/member"
)

// The tables' columns.
const (
	colIronlb   = "ironlb member"
	colTuned    = "memberlist tuned"
	colDefault  = "memberlist DefaultLAN"
	bigSlowdown = 5 // members at 500 and 1,000 run this many times slower
)

var columns = []string{colIronlb, colTuned, colDefault}

// phase is one cluster to measure.
type phase struct {
	column string
	size   int
	kills  int
	// slow is how many times slower than the defaults the members run (1,
	// or bigSlowdown when one process carries too many members): rates are
	// multiplied by it, times shown divided by it too.
	slow int
	// limit bounds the wait for every survivor to see a kill; converge, the
	// wait for every member to see every other alive at the start, and
	// reconverge after each restart; settle is the pause after
	// convergence (memberlist's queued gossip drains); budget bounds the
	// kills' total time.
	limit, converge, reconverge, settle, budget time.Duration
	start                                       func(*detector) (cluster, error)
}

// result is what one phase measured.
type result struct {
	phase
	err         error  // the phase could not be measured (fully)
	unconverged string // why the cluster was not converged at the start
	converged   time.Duration
	rest        rest
	failover    failover
	falseDeaths int
	seconds     float64 // the phase's whole run
	whole       traffic // sent over the whole run
	undetected  int     // survivors that did not see a kill within limit
}

func main() {
	kills := flag.Int("kills", 20, "kills per size at 3, 30 and 100 members")
	bigKills := flag.Int("big-kills", 3, "kills per size at 500 and 1,000 members (0: skip their failover)")
	refKills := flag.Int("ref-kills", 3, "kills with memberlist's DefaultLANConfig (about 10 s each)")
	window := flag.Duration("rest", 4*time.Second, "quiet window over which the cost at rest is measured")
	big := flag.Bool("big", true, "also measure ironlb at 500 and 1,000 members")
	total := flag.Duration("timeout", 12*time.Minute, "give up after this long")
	only := flag.String("only", "", "measure only the clusters whose \"<column> <size>\" matches this regular expression")
	flag.Parse()
	match, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membench: -only: %v\n", err)
		os.Exit(2)
	}

	began := time.Now()
	load0 := loadavg()
	var (
		mu      sync.Mutex
		results []result
	)
	tuned, lan := tunedSWIM(), memberlist.DefaultLANConfig()
	printReport := func() {
		mu.Lock()
		defer mu.Unlock()
		report(os.Stdout, results, [3]int{*kills, *bigKills, *refKills}, tuned, lan, load0, loadavg(), time.Since(began))
	}
	watchdog := time.AfterFunc(*total, func() {
		fmt.Fprintf(os.Stderr, "membench: did not finish within %v; the clusters measured so far:\n", *total)
		printReport()
		os.Exit(1)
	})
	defer watchdog.Stop()

	interval, timeout := member.DefaultInterval, member.DefaultTimeout
	ours := func(subnet byte, size, slow int) func(*detector) (cluster, error) {
		return func(d *detector) (cluster, error) {
			return startIronlb(subnet, size, time.Duration(slow)*interval, time.Duration(slow)*timeout, d)
		}
	}
	swim := func(subnet byte, size int, cfg *memberlist.Config) func(*detector) (cluster, error) {
		return func(d *detector) (cluster, error) { return startSWIM(subnet, size, cfg, d) }
	}
	s := time.Second
	phases := []phase{
		{colIronlb, 3, *kills, 1, 5 * timeout, 20 * s, 5 * s, s / 5, 40 * s, ours(211, 3, 1)},
		{colIronlb, 30, *kills, 1, 5 * timeout, 20 * s, 5 * s, s / 5, 40 * s, ours(212, 30, 1)},
		{colIronlb, 100, *kills, 1, 5 * timeout, 30 * s, 5 * s, s / 5, 40 * s, ours(213, 100, 1)},
		{colTuned, 30, *kills, 1, 5 * s, 20 * s, 5 * s, s / 2, 45 * s, swim(221, 30, tuned)},
		{colTuned, 100, *kills, 1, 5 * s, 30 * s, 5 * s, s / 2, 45 * s, swim(222, 100, tuned)},
		{colDefault, 30, *refKills, 1, 60 * s, 30 * s, 20 * s, 2 * s, 45 * s, swim(223, 30, lan)},
	}
	if *big {
		for i, size := range []int{500, 1000} {
			phases = append(phases, phase{colIronlb, size, *bigKills, bigSlowdown, bigSlowdown * 5 * timeout,
				120 * s, 20 * s, s, 40 * s, ours(byte(214+i), size, bigSlowdown)})
		}
	}

	for _, p := range phases {
		if !match.MatchString(fmt.Sprintf("%s %d", p.column, p.size)) {
			continue
		}
		fmt.Fprintf(os.Stderr, "membench: %s, %d members\n", p.column, p.size)
		r := runPhase(p, *window)
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "membench: %s, %d members: %v\n", p.column, p.size, r.err)
		}
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
		runtime.GC()
	}

	watchdog.Stop()
	printReport()
	// memberlist failing to converge is a result; ironlb failing is a bug.
	for _, r := range results {
		if r.column == colIronlb && (r.err != nil || r.unconverged != "" || r.failover.unconverged > 0) {
			os.Exit(1)
		}
	}
}

// runPhase starts p's cluster, measures it at rest, then times its kills.
func runPhase(p phase, window time.Duration) result {
	r := result{phase: p}
	det := newDetector()
	began := time.Now()
	c, err := p.start(det)
	if err != nil {
		r.err = err
		return r
	}
	defer func() {
		at := time.Now()
		c.Stop()
		progress("stopped in %v", time.Since(at).Round(time.Millisecond))
	}()
	progress("started in %v", time.Since(began).Round(time.Millisecond))
	if r.converged, err = waitConverged(c, p.converge); err != nil {
		r.unconverged = err.Error()
		progress("%v", err)
	} else {
		progress("converged in %v", r.converged.Round(time.Millisecond))
	}
	time.Sleep(p.settle)
	r.rest = atRest(c, window)
	if p.kills > 0 {
		r.failover, r.err = killAll(c, det, p.kills, p.limit, p.reconverge, p.settle, p.budget)
	}
	for _, k := range r.failover.kills {
		for _, l := range k {
			if l == never {
				r.undetected++
			}
		}
	}
	r.falseDeaths = det.falseCount()
	r.whole = c.Traffic()
	r.seconds = time.Since(began).Seconds()
	return r
}

// progress logs a step of a phase.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "membench:   "+format+"\n", args...)
}

// loadavg is the first field of /proc/loadavg: how busy the machine was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// report prints one table per measure, sizes as rows.
func report(w io.Writer, results []result, kills [3]int, tuned, lan *memberlist.Config, load0, load1 string, took time.Duration) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintf(w, "Membership on loopback, every member of a cluster in this one process: %d CPUs (GOMAXPROCS %d), load average %s at start, %s at end, %s.\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), load0, load1, took.Round(time.Second))
	fmt.Fprintf(w, "  %s: speaker/member, Interval %v, Timeout %v, Fanout %d, HMAC-SHA-256; at 500 and 1,000 members Interval %v and Timeout %v (%dx slower: one process carries every member).\n",
		colIronlb, member.DefaultInterval, member.DefaultTimeout, member.DefaultFanout,
		bigSlowdown*member.DefaultInterval, bigSlowdown*member.DefaultTimeout, bigSlowdown)
	fmt.Fprintf(w, "  %s: hashicorp/memberlist v0.5.3, DefaultLANConfig tuned for failover within 0.5 s: %s.\n", colTuned, describeSWIM(tuned))
	fmt.Fprintf(w, "  %s: hashicorp/memberlist v0.5.3, DefaultLANConfig as MetalLB runs it: %s.\n\n", colDefault, describeSWIM(lan))

	failoverTable(w, results, "until the median survivor sees it dead", kill.median)
	failoverTable(w, results, "until every survivor sees it dead", kill.every)
	table(w, "UDP datagrams sent per member per second at rest (their payload bytes per member per second)", results, func(r result) string {
		per := float64(r.slow) / float64(r.size) / r.rest.seconds
		return fmt.Sprintf("%.1f (%s/s)", float64(r.rest.sent.packets)*per, bytesString(float64(r.rest.sent.bytes)*per))
	})
	table(w, "TCP connections per member per minute: memberlist's push-pull at rest, as configured; in brackets, TCP connections opened over the whole run (joins, push-pulls, fallback pings)", results, func(r result) string {
		opened := float64(r.whole.dials) / float64(r.size) / (r.seconds / 60)
		if r.column == colIronlb {
			return "0 (0: no TCP)"
		}
		return fmt.Sprintf("%.2f (%.2f)", 60/pushPullPeriod(r).Seconds(), opened)
	})
	table(w, "CPU per member at rest: ms of CPU per second (process getrusage over the quiet window / members)", results, func(r result) string {
		return fmt.Sprintf("%.2f", float64(r.rest.cpu.Microseconds())/1000*float64(r.slow)/float64(r.size)/r.rest.seconds)
	})
	table(w, "False deaths: a live member seen dead by another, per member per minute over the whole run", results, func(r result) string {
		return fmt.Sprintf("%.2f", float64(r.falseDeaths)/float64(r.size)/(r.seconds/60))
	})

	fmt.Fprintf(w, "Failover: a member is killed without a leave (ironlb: Crash; memberlist: Shutdown without Leave), up to %d times per size (%d at 500 and 1,000, %d with DefaultLAN; fewer if a cluster's kills exceed their time budget), different victims, each restarted and the cluster converged before the next kill; per kill, the time until the median survivor and until every survivor that counted the victim alive sees it dead (ironlb: on Changes, View; memberlist: NotifyLeave, as MetalLB's speaker reacts); median and p99 over the kills (nearest rank: with fewer than 100 kills p99 is the largest).\n", kills[0], kills[1], kills[2])
	fmt.Fprintf(w, "At 500 and 1,000 members (%dx slower) datagrams and CPU are scaled back to the default Interval (x%d); failover times are as measured, and divided by %d after \"=\".\n", bigSlowdown, bigSlowdown, bigSlowdown)
	fmt.Fprintf(w, "UDP: ironlb counts Sent() (one heartbeat datagram each), bytes from the wire format (41-byte header, name, 2 bytes per member, 32-byte MAC); memberlist counts every datagram written by its transport (probes, acks, indirect probes, gossip, compound packets), bytes as sent, encrypted and compressed.\n")
	for _, r := range results {
		fmt.Fprintf(w, "  %s at %d: ", r.column, r.size)
		if r.unconverged != "" {
			fmt.Fprintf(w, "did not converge at the start (%s); ", r.unconverged)
		} else {
			fmt.Fprintf(w, "converged in %v; ", r.converged.Round(time.Millisecond))
		}
		fmt.Fprintf(w, "timers late by %v (p99) at rest; %d kills timed; %d survivor-kills not seen within %v; %d survivors already counted the victim dead; %d restarts not converged within %v; %d false deaths in %.0f s",
			r.rest.late.Round(time.Millisecond), len(r.failover.kills), r.undetected, r.limit, r.failover.deadAlready, r.failover.unconverged, r.reconverge, r.falseDeaths, r.seconds)
		if r.err != nil {
			fmt.Fprintf(w, "; ERROR: %v", r.err)
		}
		fmt.Fprintln(w)
	}
}

// pushPullPeriod is memberlist's push-pull interval at r's size: it grows
// with log2 N past 32 members.
func pushPullPeriod(r result) time.Duration {
	cfg := tunedSWIM()
	if r.column == colDefault {
		cfg = memberlist.DefaultLANConfig()
	}
	mult := 1
	for n := 32; n < r.size; n *= 2 {
		mult++
	}
	return time.Duration(mult) * cfg.PushPullInterval
}

func failoverTable(w io.Writer, results []result, what string, of func(kill) time.Duration) {
	table(w, "Failover, ms from the kill "+what+": median / p99 over kills (kills)", results, func(r result) string {
		kills := r.failover.kills
		switch {
		case len(kills) == 0 && r.err != nil:
			return "error (below)"
		case len(kills) == 0:
			return "skipped"
		}
		med, p99 := summary(kills, of)
		cell := fmt.Sprintf("%s / %s (%d)", msString(med, 1), msString(p99, 1), len(kills))
		if r.slow > 1 {
			cell += fmt.Sprintf(" = %s / %s", msString(med, r.slow), msString(p99, r.slow))
		}
		return cell
	})
}

func msString(d time.Duration, div int) string {
	if d == never {
		return "never"
	}
	return fmt.Sprintf("%d", d.Milliseconds()/int64(div))
}

func bytesString(b float64) string {
	if b >= 1000 {
		return fmt.Sprintf("%.1f kB", b/1000)
	}
	return fmt.Sprintf("%.0f B", b)
}

// table prints one measure: a row per size, a column per implementation.
func table(w io.Writer, title string, results []result, cell func(result) string) {
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "members\t%s\t\n", strings.Join(columns, "\t"))
	var sizes []int
	for _, r := range results {
		if !slices.Contains(sizes, r.size) {
			sizes = append(sizes, r.size)
		}
	}
	slices.Sort(sizes)
	for _, size := range sizes {
		row := []string{fmt.Sprint(size)}
		for _, col := range columns {
			text := "—"
			for _, r := range results {
				switch {
				case r.size != size || r.column != col:
				case r.rest.seconds == 0:
					text = "error (below)"
				default:
					text = cell(r)
				}
			}
			row = append(row, text)
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
}
