package lab

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// What the watch makes of rounds of answers: an address answered by one
// node, by none (dark until it is answered again), by several (a split),
// and by another node than before (a move, counted once however long the
// dark stretch or split between the two owners).
func TestARPWatchRounds(t *testing.T) {
	plan, err := NewPlan(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	w := NewARPWatch(&ARPProbe{plan: plan}, []netip.Addr{a, b})
	type traced struct {
		addr          netip.Addr
		before, after int
	}
	var traces []traced
	w.Trace = func(a netip.Addr, _, _ time.Time, before, after int) {
		traces = append(traces, traced{a, before, after})
	}
	mac := func(n int) []net.HardwareAddr { return []net.HardwareAddr{plan.NodeMAC(n)} }
	t0 := time.Now()
	rounds := []map[netip.Addr][]net.HardwareAddr{
		{a: mac(1), b: mac(2)},
		{a: nil, b: mac(2)},                             // a dark
		{a: nil, b: mac(3)},                             // b moves
		{a: mac(2), b: mac(3)},                          // a back, on another node: one move
		{a: append(mac(2), plan.NodeMAC(3)), b: mac(3)}, // a split
		{a: mac(2), b: mac(3)},                          // a alone on the same node again: no move
	}
	for i, r := range rounds {
		w.take(t0.Add(time.Duration(i)*ARPRoundEvery), r)
	}
	d := w.Step()
	if d.Rounds != len(rounds) {
		t.Errorf("rounds %d, want %d", d.Rounds, len(rounds))
	}
	if got := d.Moves; got[a] != 1 || got[b] != 1 || len(got) != 2 {
		t.Errorf("moves %v, want one each", got)
	}
	if got := d.Longest[a]; got != 2*ARPRoundEvery {
		t.Errorf("a dark for %v, want two rounds (%v)", got, 2*ARPRoundEvery)
	}
	if _, dark := d.Longest[b]; dark {
		t.Errorf("b counted dark: %v", d.Longest[b])
	}
	if len(d.Splits) != 1 || d.Splits[0].Addr != a || len(d.Splits[0].Nodes) != 2 {
		t.Errorf("splits %v, want a by nodes 2 and 3 once", d.Splits)
	}
	if len(traces) != 1 || traces[0] != (traced{a, 1, 2}) {
		t.Errorf("traced %v, want a's one dark stretch, from node 1 to node 2", traces)
	}
	if d := w.Step(); len(d.Moves)+len(d.Splits)+len(d.Longest) != 0 {
		t.Errorf("the next step begins with %v", d)
	}
}
