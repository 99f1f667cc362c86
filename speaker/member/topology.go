package member

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/ironlb/ironlb/internal/rendezvous"
)

// DefaultFanout is how many peers a member sends each heartbeat to: 16 at
// 10 per second is 160 datagrams per second, whatever the cluster's size.
const DefaultFanout = 16

// ringLinks of a member's targets are its successors on a ring of the
// members ordered by a hash of their names: every member then has at least
// that many senders, so one that hears none of them is cut off, not merely
// unlucky in the draw.
const ringLinks = 2

// topology is the member list, sorted by name (the order of every vector),
// and who sends heartbeats to whom. Every member derives the same topology
// from the same list, so each knows whom it must hear.
type topology struct {
	names []string
	addrs []netip.AddrPort
	index map[string]int
	hash  uint64
	self  int   // this node's index; -1 when it is no member
	send  []int // members this node sends to
	hear  []int // members that send to this node
}

// newTopology builds the topology of members for node self.
func newTopology(self string, members map[string]netip.AddrPort, fanout int) *topology {
	t := &topology{index: make(map[string]int, len(members)), self: -1}
	t.names = make([]string, 0, len(members))
	for name := range members {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	h := sha256.New()
	for i, name := range t.names {
		t.index[name] = i
		t.addrs = append(t.addrs, unmap(members[name]))
		h.Write([]byte(name))
		h.Write([]byte{0})
	}
	t.hash = binary.BigEndian.Uint64(h.Sum(nil))
	if i, ok := t.index[self]; ok {
		t.self = i
	}
	if t.self < 0 {
		return t
	}
	targets := targetsOf(t.names, fanout)
	t.send = targets[t.self]
	for from, to := range targets {
		if slices.Contains(to, t.self) {
			t.hear = append(t.hear, from)
		}
	}
	return t
}

// targetsOf gives, for every member (by index into names), the members it
// sends heartbeats to: everyone when the cluster is small, otherwise its
// ringLinks successors on the hash ring and the fanout-ringLinks others that
// score highest for it. The random-looking choice gives a graph of small
// diameter (news of a member crosses 500 members in about three hops); the
// ring guarantees every member has senders.
func targetsOf(names []string, fanout int) [][]int {
	n := len(names)
	out := make([][]int, n)
	if n-1 <= fanout {
		for i := range names {
			for j := range names {
				if j != i {
					out[i] = append(out[i], j)
				}
			}
		}
		return out
	}
	ring := make([]int, n)
	for i := range ring {
		ring[i] = i
	}
	slices.SortFunc(ring, func(a, b int) int {
		return cmp.Or(cmp.Compare(nameHash(names[a]), nameHash(names[b])), cmp.Compare(names[a], names[b]))
	})
	pos := make([]int, n)
	for p, i := range ring {
		pos[i] = p
	}
	type scored struct {
		j     int
		score uint64
	}
	cands := make([]scored, 0, n)
	for i := range names {
		chosen := make([]int, 0, fanout)
		for k := 1; k <= ringLinks; k++ {
			chosen = append(chosen, ring[(pos[i]+k)%n])
		}
		cands = cands[:0]
		for j := range names {
			if j != i && !slices.Contains(chosen, j) {
				cands = append(cands, scored{j, pairScore(names[i], names[j])})
			}
		}
		slices.SortFunc(cands, func(a, b scored) int { return cmp.Compare(b.score, a.score) })
		for _, c := range cands[:fanout-ringLinks] {
			chosen = append(chosen, c.j)
		}
		slices.Sort(chosen)
		out[i] = chosen
	}
	return out
}

func nameHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return rendezvous.Mix(h.Sum64())
}

func pairScore(from, to string) uint64 { return rendezvous.Score(from, to) }
