package lab

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// A round of an ARPWatch asks every address once and takes the answers
// that come within ARPRoundWait of its questions, as a client does: Linux
// waits a second (retrans_time_ms) for an answer before it asks again, and
// a speaker that the lab's shared CPUs leave waiting may answer a few
// hundred milliseconds late. Rounds begin ARPRoundEvery apart, which is how
// finely darkness is measured, so two are open at once. Every ARP request
// reaches every speaker's packet socket: the pause between rounds keeps the
// watch from loading the lab.
const (
	ARPRoundWait  = time.Second
	ARPRoundEvery = 500 * time.Millisecond
)

// ARPWatch asks ARP for a set of addresses from the LAN client, round after
// round in the background, and keeps what a user would notice: an address
// answered by several nodes at once (split brain, the worst failure of L2
// mode) and every stretch of time an address went unanswered (dark).
// Callers read it in steps: Step returns and forgets what happened since
// the last one.
type ARPWatch struct {
	probe *ARPProbe
	addrs []netip.Addr

	mu                  sync.Mutex
	rounds              int
	lastAt              time.Time          // when the last round that ended began
	owners              map[netip.Addr]int // by the last round: 0 none, -1 several
	darkSince           map[netip.Addr]time.Time
	dark                map[netip.Addr][]time.Duration // stretches ended in this step
	splits              []Split
	alone               map[netip.Addr]int // the last node seen answering alone
	moves               map[netip.Addr]int // in this step
	stepBegan           time.Time
	stepRound           int
	stepDrops, stepLate int // the probe's Dropped when the step began
	err                 error
	// Trace, when set before the first round, is told of every dark
	// stretch as it ends: the address, when it began and ended, the last
	// node that answered it alone before it (0: none yet), and who answers
	// after it (a node, or -1 for several).
	Trace func(a netip.Addr, from, to time.Time, before, after int)

	stop, done chan struct{}
}

// Split is one question answered by several nodes (their numbers, 0 for a
// MAC that is no node's).
type Split struct {
	At    time.Time
	Addr  netip.Addr
	Nodes []int
}

// Dark is what an ARPWatch saw during one step.
type Dark struct {
	Elapsed time.Duration
	Rounds  int
	// Longest is each address's longest dark stretch (one still open
	// counted to the end of the step); Total the sum of its stretches.
	Longest, Total map[netip.Addr]time.Duration
	Splits         []Split
	// Moves counts, by address, the times it was answered alone by another
	// node than the last one that answered it alone (a dark stretch or a
	// split between them does not count as a move of its own).
	Moves map[netip.Addr]int
	// ProbeDropped counts the frames the LAN client's own socket dropped
	// (its queue full): darkness seen meanwhile may be the client's.
	// ProbeLate counts the answers that came after their round was over
	// (counted dark in it).
	ProbeDropped, ProbeLate int
}

// StartARPWatch starts asking for addrs through probe. Close ends it.
func StartARPWatch(probe *ARPProbe, addrs []netip.Addr) *ARPWatch {
	w := NewARPWatch(probe, addrs)
	w.Start()
	return w
}

// NewARPWatch is a watch of addrs that has not begun asking (Start).
func NewARPWatch(probe *ARPProbe, addrs []netip.Addr) *ARPWatch {
	w := &ARPWatch{
		probe: probe, addrs: addrs,
		owners: map[netip.Addr]int{}, alone: map[netip.Addr]int{}, moves: map[netip.Addr]int{}, darkSince: map[netip.Addr]time.Time{}, dark: map[netip.Addr][]time.Duration{},
		stepBegan: time.Now(), stop: make(chan struct{}), done: make(chan struct{}),
	}
	return w
}

// Start begins the rounds of a watch made by NewARPWatch.
func (w *ARPWatch) Start() { go w.run() }

// Close ends the watch (the probe stays open).
func (w *ARPWatch) Close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *ARPWatch) run() {
	defer close(w.done)
	type begun struct {
		at time.Time
		r  *ARPRound
	}
	var open []begun // oldest first
	defer func() {
		for _, b := range open {
			_, _ = b.r.End()
		}
	}()
	fail := func(err error) {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
	next := time.Now()
	for {
		now := time.Now()
		for len(open) > 0 && now.Sub(open[0].at) >= ARPRoundWait {
			answers, err := open[0].r.End()
			if err != nil {
				fail(err)
				return
			}
			w.mu.Lock()
			w.take(open[0].at, answers)
			w.mu.Unlock()
			open = open[1:]
		}
		if !now.Before(next) {
			r, err := w.probe.Begin(w.addrs)
			if err != nil {
				fail(err)
				return
			}
			open = append(open, begun{at: now, r: r})
			next = now.Add(ARPRoundEvery) // late rounds are not caught up in a burst
		}
		wake := next
		if len(open) > 0 {
			if end := open[0].at.Add(ARPRoundWait); end.Before(wake) {
				wake = end
			}
		}
		select {
		case <-w.stop:
			return
		case <-time.After(time.Until(wake)):
		}
	}
}

// take records one round asked at at; w.mu is held.
func (w *ARPWatch) take(at time.Time, answers map[netip.Addr][]net.HardwareAddr) {
	w.rounds++
	w.lastAt = at
	for _, a := range w.addrs {
		var nodes []int
		for _, mac := range answers[a] {
			nodes = append(nodes, w.probe.plan.NodeByMAC(mac)) // 0: no node's MAC
		}
		slices.Sort(nodes)
		before := w.alone[a]
		switch {
		case len(nodes) == 0:
			w.owners[a] = 0
			if _, open := w.darkSince[a]; !open {
				w.darkSince[a] = at
			}
			continue
		case len(nodes) > 1:
			w.owners[a] = -1
			w.splits = append(w.splits, Split{At: at, Addr: a, Nodes: nodes})
		default:
			w.owners[a] = nodes[0]
			if before != 0 && before != nodes[0] {
				w.moves[a]++
			}
			w.alone[a] = nodes[0]
		}
		if since, open := w.darkSince[a]; open {
			w.dark[a] = append(w.dark[a], at.Sub(since))
			delete(w.darkSince, a)
			if w.Trace != nil {
				w.Trace(a, since, at, before, w.owners[a])
			}
		}
	}
}

// Last returns how many rounds ended so far, when the last of them began,
// the owners it saw, and the error that ended the watch, if any.
func (w *ARPWatch) Last() (rounds int, began time.Time, owners map[netip.Addr]int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rounds, w.lastAt, maps.Clone(w.owners), w.err
}

// TakeSplits returns and forgets the split brains seen so far.
func (w *ARPWatch) TakeSplits() []Split {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.splits
	w.splits = nil
	return s
}

// Step ends a step: it returns what the watch saw since the last one and
// begins the next. An address still dark goes on counting in the next step.
func (w *ARPWatch) Step() Dark {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	drops, late := w.probe.Dropped()
	d := Dark{Elapsed: now.Sub(w.stepBegan), Rounds: w.rounds - w.stepRound, Splits: w.splits,
		Longest: map[netip.Addr]time.Duration{}, Total: map[netip.Addr]time.Duration{}, Moves: w.moves, ProbeDropped: drops - w.stepDrops, ProbeLate: late - w.stepLate}
	for a, stretches := range w.dark {
		for _, s := range stretches {
			d.Longest[a] = max(d.Longest[a], s)
			d.Total[a] += s
		}
	}
	for a, since := range w.darkSince {
		s := now.Sub(since)
		d.Longest[a] = max(d.Longest[a], s)
		d.Total[a] += s
		w.darkSince[a] = now
	}
	w.splits, w.dark, w.moves, w.stepBegan, w.stepRound, w.stepDrops, w.stepLate = nil, map[netip.Addr][]time.Duration{}, map[netip.Addr]int{}, now, w.rounds, drops, late
	return d
}
