package l2scale

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

// A round of the watch asks every address once and takes the answers that
// come within roundWait of its last question (a busy node's answer may take
// a few hundred milliseconds; a client waits a second before it asks
// again); rounds begin roundEvery apart, which is how finely darkness is
// measured. Every ARP request reaches every speaker's packet socket: the
// pause between rounds keeps the watch from loading the lab's two cores.
const (
	roundWait  = 400 * time.Millisecond
	roundEvery = 500 * time.Millisecond
)

// watch asks ARP for every address from the LAN client, round after round
// in the background, and keeps what a user would notice: an address
// answered by two nodes at once (split brain, the worst failure of L2
// mode) and every stretch of time an address went unanswered (dark). A test
// reads it step by step: step reports and checks what happened since the
// last step.
type watch struct {
	probe *lab.ARPProbe
	plan  lab.Plan
	addrs []netip.Addr

	mu        sync.Mutex
	rounds    int
	owners    map[netip.Addr]int // by the last round: 0 none, -1 several
	darkSince map[netip.Addr]time.Time
	dark      map[netip.Addr][]time.Duration // stretches ended in this step
	splits    []split
	stepBegan time.Time
	stepRound int
	err       error

	stop, done chan struct{}
}

// split is one question answered by several nodes.
type split struct {
	at    time.Time
	addr  netip.Addr
	nodes []int
}

func startWatch(f *framework.F, addrs []netip.Addr) *watch {
	f.T.Helper()
	probe, err := f.OpenARPProbe()
	if err != nil {
		f.T.Fatal(err)
	}
	w := &watch{
		probe: probe, plan: f.Plan, addrs: addrs,
		owners: map[netip.Addr]int{}, darkSince: map[netip.Addr]time.Time{}, dark: map[netip.Addr][]time.Duration{},
		stepBegan: time.Now(), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	f.T.Cleanup(w.close)
	return w
}

func (w *watch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.probe.Close()
}

func (w *watch) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		at := time.Now()
		answers, err := w.probe.Ask(w.addrs, roundWait)
		w.mu.Lock()
		if err != nil {
			w.err = err
			w.mu.Unlock()
			return
		}
		w.take(at, answers)
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-time.After(max(roundEvery-time.Since(at), 0)):
		}
	}
}

// take records one round asked at at.
func (w *watch) take(at time.Time, answers map[netip.Addr][]net.HardwareAddr) {
	w.rounds++
	for _, a := range w.addrs {
		var nodes []int
		for _, mac := range answers[a] {
			nodes = append(nodes, w.plan.NodeByMAC(mac)) // 0: no node's MAC
		}
		slices.Sort(nodes)
		switch {
		case len(nodes) == 0:
			w.owners[a] = 0
			if _, open := w.darkSince[a]; !open {
				w.darkSince[a] = at
			}
			continue
		case len(nodes) > 1:
			w.owners[a] = -1
			w.splits = append(w.splits, split{at: at, addr: a, nodes: nodes})
		default:
			w.owners[a] = nodes[0]
		}
		if since, open := w.darkSince[a]; open {
			w.dark[a] = append(w.dark[a], at.Sub(since))
			delete(w.darkSince, a)
		}
	}
}

// next waits for a round that began after it was called and returns the
// owners it saw.
func (w *watch) next(f *framework.F) map[netip.Addr]int {
	f.T.Helper()
	w.mu.Lock()
	want := w.rounds + 2 // the running round may have begun before the call
	w.mu.Unlock()
	for i := 0; i < 400; i++ {
		w.mu.Lock()
		rounds, err, owners := w.rounds, w.err, maps.Clone(w.owners)
		w.mu.Unlock()
		if err != nil {
			f.T.Fatalf("ARP watch: %v", err)
		}
		if rounds >= want {
			return owners
		}
		time.Sleep(25 * time.Millisecond)
	}
	f.T.Fatalf("ARP watch: no round in 10 s")
	return nil
}

// watchFor lets the watch ask for d more, and waits for its next round.
func (w *watch) watchFor(f *framework.F, d time.Duration) {
	f.T.Helper()
	time.Sleep(d)
	w.next(f)
}

// waitOwners waits, at most rounds rounds, until every address is answered
// by exactly one node and check accepts the owners, and returns them.
func (w *watch) waitOwners(f *framework.F, what string, rounds int, check func(owners map[netip.Addr]int) error) map[netip.Addr]int {
	f.T.Helper()
	var err error
	for i := 0; i < rounds; i++ {
		owners := w.next(f)
		if err = allAnswered(f, owners); err == nil {
			if err = check(owners); err == nil {
				return owners
			}
		}
	}
	f.T.Fatalf("%s: not so after %d ARP rounds: %v", what, rounds, err)
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

// takeSplits returns and forgets the split brains seen so far.
func (w *watch) takeSplits() []split {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.splits
	w.splits = nil
	return s
}

// stepReport is how long each address went unanswered during a step.
type stepReport struct {
	name    string
	elapsed time.Duration
	rounds  int
	// longest is each address's longest dark stretch (open ones counted to
	// the end of the step); total the sum of its stretches.
	longest, total map[netip.Addr]time.Duration
}

// step ends a step: it fails the test for every split brain seen during
// it, logs the seconds each address went unanswered, and returns them.
func (w *watch) step(f *framework.F, name string) stepReport {
	f.T.Helper()
	w.next(f)
	now := time.Now()
	w.mu.Lock()
	r := stepReport{name: name, elapsed: now.Sub(w.stepBegan), rounds: w.rounds - w.stepRound,
		longest: map[netip.Addr]time.Duration{}, total: map[netip.Addr]time.Duration{}}
	for a, stretches := range w.dark {
		for _, d := range stretches {
			r.longest[a] = max(r.longest[a], d)
			r.total[a] += d
		}
	}
	for a, since := range w.darkSince {
		d := now.Sub(since)
		r.longest[a] = max(r.longest[a], d)
		r.total[a] += d
		// An address still dark goes on counting in the next step.
		w.darkSince[a] = now
	}
	splits := w.splits
	w.splits, w.dark, w.stepBegan, w.stepRound = nil, map[netip.Addr][]time.Duration{}, now, w.rounds
	w.mu.Unlock()

	if len(splits) > 0 {
		f.T.Errorf("%s: split brain: %s", name, splitSummary(f, splits))
	}
	f.T.Logf("%s: %.1fs, %d ARP rounds of %d addresses; %s", name, r.elapsed.Seconds(), r.rounds, len(w.addrs), r.darkSummary())
	return r
}

// splitSummary says, per address, when and by which nodes it was answered
// at once.
func splitSummary(f *framework.F, splits []split) string {
	type seen struct {
		first, last time.Time
		rounds      int
		sets        map[string]bool
	}
	by := map[netip.Addr]*seen{}
	for _, s := range splits {
		e := by[s.addr]
		if e == nil {
			e = &seen{first: s.at, sets: map[string]bool{}}
			by[s.addr] = e
		}
		e.last = s.at
		e.rounds++
		var names []string
		for _, n := range s.nodes {
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
	if len(r.longest) == 0 {
		return "no address unanswered in any round"
	}
	addrs := slices.Collect(maps.Keys(r.longest))
	slices.SortFunc(addrs, func(a, b netip.Addr) int {
		if c := r.longest[b] - r.longest[a]; c != 0 {
			return int(c / time.Microsecond)
		}
		return a.Compare(b)
	})
	var parts []string
	for _, a := range addrs {
		parts = append(parts, fmt.Sprintf("%s %.2fs", a, r.total[a].Seconds()))
	}
	ds := slices.Collect(maps.Values(r.longest))
	slices.Sort(ds)
	return fmt.Sprintf("%d addresses dark at some point, longest %.2fs, median of those %.2fs; dark seconds per address: %s",
		len(addrs), ds[len(ds)-1].Seconds(), ds[len(ds)/2].Seconds(), strings.Join(parts, ", "))
}

// checkDark fails the test for every address that stayed dark longer than
// limit in one stretch.
func (r stepReport) checkDark(f *framework.F, limit time.Duration, why string) {
	f.T.Helper()
	var over []string
	for a, d := range r.longest {
		if d > limit {
			over = append(over, fmt.Sprintf("%s %.2fs", a, d.Seconds()))
		}
	}
	if len(over) > 0 {
		sort.Strings(over)
		f.T.Errorf("%s: %d addresses went unanswered for longer than %v (%s): %s", r.name, len(over), limit, why, strings.Join(over, ", "))
	}
}
