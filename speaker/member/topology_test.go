package member

import (
	"net/netip"
	"testing"
)

// The heartbeat graph: each member sends to min(N-1, Fanout) others, every
// member has senders, and news crosses the cluster in a few hops.
func TestTopology(t *testing.T) {
	for _, tc := range []struct{ size, maxHops int }{{2, 1}, {3, 1}, {17, 1}, {30, 2}, {100, 3}, {500, 4}} {
		names := nodeNames(tc.size)
		targets := targetsOf(names, DefaultFanout)
		senders := make([]int, tc.size)
		for i, to := range targets {
			if want := min(tc.size-1, DefaultFanout); len(to) != want {
				t.Fatalf("%d members: %s sends to %d, want %d", tc.size, names[i], len(to), want)
			}
			for _, j := range to {
				if j == i {
					t.Fatalf("%d members: %s sends to itself", tc.size, names[i])
				}
				senders[j]++
			}
		}
		for i, n := range senders {
			if n < min(tc.size-1, ringLinks) {
				t.Errorf("%d members: %s has %d senders", tc.size, names[i], n)
			}
		}
		if hops := diameter(targets); hops > tc.maxHops {
			t.Errorf("%d members: news takes %d hops to cross, want at most %d", tc.size, hops, tc.maxHops)
		}
	}
}

// diameter is the most hops a heartbeat's news needs from any member to any other.
func diameter(targets [][]int) int {
	worst := 0
	for s := range targets {
		dist := make([]int, len(targets))
		for i := range dist {
			dist[i] = -1
		}
		dist[s] = 0
		queue := []int{s}
		for len(queue) > 0 {
			i := queue[0]
			queue = queue[1:]
			for _, j := range targets[i] {
				if dist[j] < 0 {
					dist[j] = dist[i] + 1
					queue = append(queue, j)
				}
			}
		}
		for _, d := range dist {
			if d < 0 {
				return len(targets) // not connected
			}
			worst = max(worst, d)
		}
	}
	return worst
}

// Every member computes the same graph from the same list, so each knows
// whom it must hear; a member left out of the list takes no part.
func TestTopologyAgrees(t *testing.T) {
	members := map[string]netip.AddrPort{}
	for i, n := range nodeNames(60) {
		members[n] = netip.AddrPortFrom(loopback(71, i), DefaultPort)
	}
	topos := map[string]*topology{}
	for n := range members {
		topos[n] = newTopology(n, members, DefaultFanout)
	}
	for n, tp := range topos {
		for _, j := range tp.send {
			peer := topos[tp.names[j]]
			found := false
			for _, k := range peer.hear {
				found = found || peer.names[k] == n
			}
			if !found {
				t.Fatalf("%s sends to %s, which does not expect it", n, tp.names[j])
			}
		}
		if tp.hash != topos[nodeName(1)].hash {
			t.Fatalf("%s hashes the member list differently", n)
		}
	}
	if out := newTopology("not-a-member", members, DefaultFanout); out.self != -1 || len(out.send) != 0 {
		t.Fatalf("a node outside the list sends to %d", len(out.send))
	}
}
