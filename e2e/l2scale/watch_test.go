package l2scale

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

// watch is the lab's ARP watch of every address, read by a test step by
// step: step reports and checks what happened since the last step.
type watch struct {
	*lab.ARPWatch
	addrs []netip.Addr
	// speakerDrops is each node's ironlb_speaker_l2_dropped_total when the
	// step began.
	speakerDrops map[int]float64
}

func startWatch(f *framework.F, addrs []netip.Addr) *watch {
	f.T.Helper()
	probe, err := f.OpenARPProbe()
	if err != nil {
		f.T.Fatal(err)
	}
	w := &watch{ARPWatch: lab.StartARPWatch(probe, addrs), addrs: addrs, speakerDrops: droppedBySpeakers(f)}
	f.T.Cleanup(func() {
		w.Close()
		probe.Close()
	})
	return w
}

// next waits for a round that began after it was called and returns the
// owners it saw.
func (w *watch) next(f *framework.F) map[netip.Addr]int {
	f.T.Helper()
	called := time.Now()
	owners, _ := w.await(f, func(_ int, began time.Time) bool { return !began.Before(called) })
	return owners
}

// await waits, at most 10 s, until the last round that ended is one done
// accepts (by the rounds ended so far and when it began), and returns its
// owners and the rounds ended.
func (w *watch) await(f *framework.F, done func(rounds int, began time.Time) bool) (map[netip.Addr]int, int) {
	f.T.Helper()
	for i := 0; i < 400; i++ {
		rounds, began, owners, err := w.Last()
		if err != nil {
			f.T.Fatalf("ARP watch: %v", err)
		}
		if rounds > 0 && done(rounds, began) {
			return owners, rounds
		}
		time.Sleep(25 * time.Millisecond)
	}
	f.T.Fatalf("ARP watch: no round in 10 s")
	return nil, 0
}

// watchFor lets the watch ask for d more, and waits until the rounds begun
// by then have ended.
func (w *watch) watchFor(f *framework.F, d time.Duration) {
	f.T.Helper()
	until := time.Now().Add(d)
	time.Sleep(d)
	w.await(f, func(_ int, began time.Time) bool { return !began.Add(lab.ARPRoundEvery).Before(until) })
}

// waitOwners waits, at most for within, until every address is answered
// by exactly one node and check accepts the owners, and returns them. The
// first round it looks at began after the call; then every round in turn.
func (w *watch) waitOwners(f *framework.F, what string, within time.Duration, check func(owners map[netip.Addr]int) error) map[netip.Addr]int {
	f.T.Helper()
	var err error
	called := time.Now()
	seen, looked := 0, 0
	for looked == 0 || time.Since(called) < within {
		owners, n := w.await(f, func(n int, began time.Time) bool { return n > seen && !began.Before(called) })
		seen, looked = n, looked+1
		if err = allAnswered(f, owners); err == nil {
			if err = check(owners); err == nil {
				return owners
			}
		}
	}
	f.T.Fatalf("%s: not so after %v (%d ARP rounds): %v", what, within, looked, err)
	return nil
}

func allAnswered(f *framework.F, owners map[netip.Addr]int) error {
	var none, several []string
	for a, n := range owners {
		switch n {
		case 0:
			none = append(none, a.String())
		case -1:
			several = append(several, a.String())
		}
	}
	if len(none)+len(several) == 0 {
		return nil
	}
	sort.Strings(none)
	sort.Strings(several)
	return fmt.Errorf("%d addresses answered by nobody %v, %d by several nodes %v", len(none), head(none), len(several), head(several))
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// ownedBy are the addresses node n answers.
func ownedBy(owners map[netip.Addr]int, n int) []netip.Addr {
	var out []netip.Addr
	for a, o := range owners {
		if o == n {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// stepReport is how long each address went unanswered during a step.
type stepReport struct {
	name string
	lab.Dark
	// drops says which sockets dropped ARP frames during the step, which
	// would explain addresses dark while their owners answered ("" none).
	drops string
}

// step ends a step: it fails the test for every split brain seen during
// it, logs the seconds each address went unanswered, and returns them.
func (w *watch) step(f *framework.F, name string) stepReport {
	f.T.Helper()
	w.next(f)
	r := stepReport{name: name, Dark: w.Step()}
	r.drops = w.dropsSince(f, r.ProbeDropped, r.ProbeLate)
	if len(r.Splits) > 0 {
		f.T.Errorf("%s: split brain: %s", name, splitSummary(f, r.Splits))
	}
	f.T.Logf("%s: %.1fs, %d ARP rounds of %d addresses; %s%s", name, r.Elapsed.Seconds(), r.Rounds, len(w.addrs), r.darkSummary(), r.drops)
	return r
}

// droppedBySpeakers is each node's ironlb_speaker_l2_dropped_total, summed
// over its sockets (nodes whose metrics cannot be read are left out).
func droppedBySpeakers(f *framework.F) map[int]float64 {
	out := map[int]float64{}
	for n := 1; n <= f.AllNodes(); n++ {
		m, err := f.SpeakerMetrics(n)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(m, "\n") {
			if rest, ok := strings.CutPrefix(line, "ironlb_speaker_l2_dropped_total{"); ok {
				if _, v, ok := strings.Cut(rest, "} "); ok {
					x, _ := strconv.ParseFloat(v, 64)
					out[n] += x
				}
			}
		}
	}
	return out
}

// dropsSince says which sockets dropped ARP frames since the last step: the
// LAN client's (probeDropped) and the speakers' (read now), and how many
// answers came after their round (late), or "".
func (w *watch) dropsSince(f *framework.F, probeDropped, late int) string {
	now := droppedBySpeakers(f)
	var by []string
	for n := 1; n <= f.AllNodes(); n++ {
		if d := now[n] - w.speakerDrops[n]; d > 0 {
			by = append(by, fmt.Sprintf("%s %.0f", node(f, n), d))
		}
	}
	w.speakerDrops = now
	var out string
	if probeDropped > 0 {
		out += fmt.Sprintf("; the LAN client's socket dropped %d frames (its rounds may show answered addresses dark)", probeDropped)
	}
	if len(by) > 0 {
		out += fmt.Sprintf("; speakers' sockets dropped ARP frames (requests unanswered): %s", strings.Join(by, ", "))
	}
	if late > 0 {
		out += fmt.Sprintf("; %d answers came after their round (%v), counted dark", late, lab.ARPRoundWait)
	}
	return out
}

// splitSummary says, per address, when and by which nodes it was answered
// at once.
func splitSummary(f *framework.F, splits []lab.Split) string {
	type seen struct {
		first, last time.Time
		rounds      int
		sets        map[string]bool
	}
	by := map[netip.Addr]*seen{}
	for _, s := range splits {
		e := by[s.Addr]
		if e == nil {
			e = &seen{first: s.At, sets: map[string]bool{}}
			by[s.Addr] = e
		}
		e.last = s.At
		e.rounds++
		var names []string
		for _, n := range s.Nodes {
			names = append(names, node(f, n))
		}
		e.sets[strings.Join(names, " and ")] = true
	}
	addrs := slices.SortedFunc(maps.Keys(by), netip.Addr.Compare)
	var lines []string
	for _, a := range addrs {
		e := by[a]
		lines = append(lines, fmt.Sprintf("%s in %d rounds from %s to %s, by %s", a, e.rounds,
			e.first.Format("15:04:05.000"), e.last.Format("15:04:05.000"), strings.Join(slices.Sorted(maps.Keys(e.sets)), "; by ")))
	}
	more := ""
	if len(lines) > 20 {
		more = fmt.Sprintf("\n\t... and %d more addresses", len(lines)-20)
		lines = lines[:20]
	}
	return fmt.Sprintf("%d addresses answered by several nodes at once:\n\t%s%s", len(addrs), strings.Join(lines, "\n\t"), more)
}

// darkSummary says which addresses went unanswered and for how long.
func (r stepReport) darkSummary() string {
	if len(r.Longest) == 0 {
		return "no address unanswered in any round"
	}
	addrs := slices.Collect(maps.Keys(r.Longest))
	slices.SortFunc(addrs, func(a, b netip.Addr) int {
		if c := r.Longest[b] - r.Longest[a]; c != 0 {
			return int(c / time.Microsecond)
		}
		return a.Compare(b)
	})
	var parts []string
	for _, a := range addrs {
		parts = append(parts, fmt.Sprintf("%s %.2fs", a, r.Total[a].Seconds()))
	}
	ds := slices.Collect(maps.Values(r.Longest))
	slices.Sort(ds)
	return fmt.Sprintf("%d addresses dark at some point, longest %.2fs, median of those %.2fs; dark seconds per address: %s",
		len(addrs), ds[len(ds)-1].Seconds(), ds[len(ds)/2].Seconds(), strings.Join(parts, ", "))
}

// checkDark fails the test for every address that stayed dark longer than
// limit in one stretch.
func (r stepReport) checkDark(f *framework.F, limit time.Duration, why string) {
	f.T.Helper()
	var over []string
	for a, d := range r.Longest {
		if d > limit {
			over = append(over, fmt.Sprintf("%s %.2fs", a, d.Seconds()))
		}
	}
	if len(over) > 0 {
		sort.Strings(over)
		f.T.Errorf("%s: %d addresses went unanswered for longer than %v (%s): %s%s", r.name, len(over), limit, why, strings.Join(over, ", "), r.drops)
	}
}
