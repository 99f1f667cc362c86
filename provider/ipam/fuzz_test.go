package ipam

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"go4.org/netipx"
)

// The fuzz test drives the allocator with random sequences of pool changes, restores,
// allocations and releases over a few tiny, overlapping pools, and after every operation checks
// what must always hold, against a model it keeps itself and against brute-force counts.

var (
	fuzzRanges = []string{
		"172.31.0.250-172.31.1.3", // crosses a .255 and a .0
		"172.31.1.2-172.31.1.6",   // overlaps the one before
		"172.31.2.0/30",
		"172.31.3.255", // a single buggy address
		"fd31::/126",
		"fd31::2-fd31::5", // overlaps the one before
	}
	fuzzAddrs = addrs("172.31.0.251", "172.31.0.255", "172.31.1.0", "172.31.1.4", "172.31.2.1",
		"172.31.3.255", "172.31.9.9", "fd31::1", "fd31::4", "fd31:9::9")
	fuzzServices = []string{"a/s0", "a/s1", "a/s2", "b/s3", "b/s4", "b/s5"}
	fuzzPorts    = [][]Port{nil, ports("TCP/80"), ports("TCP/443"), ports("UDP/53"), ports("TCP/80", "UDP/53")}
	fuzzFamilies = []struct {
		policy Policy
		fams   []Family
	}{
		{SingleStack, []Family{IPv4}},
		{SingleStack, []Family{IPv6}},
		{PreferDualStack, []Family{IPv4, IPv6}},
		{PreferDualStack, []Family{IPv6, IPv4}},
		{RequireDualStack, []Family{IPv4, IPv6}},
		{RequireDualStack, []Family{IPv6, IPv4}},
	}
)

type byteReader struct{ data []byte }

func (r *byteReader) next(n int) int {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return int(b) % n
}

type fuzzModel struct {
	t        *testing.T
	a        *Allocator
	pools    []Pool
	holds    map[string][]netip.Addr
	recorded map[string]Request
	served   map[string]bool // recorded by a successful Allocate, not by Restore
}

func FuzzAllocateRelease(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 2, 0})
	f.Add([]byte{0, 255, 7, 1, 3, 2, 1, 2, 1, 1, 4, 1, 1, 1, 2, 1, 2, 3, 9, 2, 0})
	f.Add([]byte{0, 63, 63, 63, 63, 1, 4, 4, 0, 1, 1, 1, 1, 5, 4, 1, 1, 2, 2, 3, 0, 2, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		runFuzzOps(t, &byteReader{data})
	})
}

// TestAllocateRelease_RandomSequencesKeepInvariants runs the fuzz target on random inputs, so
// that a plain go test covers it too.
func TestAllocateRelease_RandomSequencesKeepInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range 300 {
		data := make([]byte, 160)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		runFuzzOps(t, &byteReader{data})
		if t.Failed() {
			t.Logf("input: %v", data)
			return
		}
	}
}

func runFuzzOps(t *testing.T, in *byteReader) {
	m := &fuzzModel{t: t, a: New(), holds: map[string][]netip.Addr{}, recorded: map[string]Request{}, served: map[string]bool{}}
	m.setPools(in)
	// Restores come first, as at start-up.
	for range in.next(4) {
		m.restore(in)
	}
	for len(in.data) > 0 && !t.Failed() {
		switch in.next(9) {
		case 0:
			m.setPools(in)
		case 1, 2:
			m.release(in)
		case 3:
			m.again(in)
		default:
			m.allocate(in)
		}
		m.check()
	}
}

func (m *fuzzModel) setPools(in *byteReader) {
	m.pools = nil
	for i := range 1 + in.next(4) {
		flags := in.next(64)
		var specs []string
		for j, spec := range fuzzRanges {
			if in.next(3) == 0 || (j == i && flags&32 == 0) {
				specs = append(specs, spec)
			}
		}
		p := Pool{
			Name:          fmt.Sprintf("p%d", i),
			Ranges:        rs(specs...),
			Visibility:    External,
			AutoAssign:    flags&1 == 0,
			AvoidBuggyIPs: flags&2 != 0,
			CreatedUnix:   int64(in.next(3)),
		}
		if flags&4 != 0 {
			p.Visibility = Internal
		}
		p.Deleting = in.next(6) == 0
		if flags&8 != 0 {
			p = reserved(p, in.next(3), "", "")
			if flags&16 != 0 {
				p = reserved(p, p.Priority, "team=a", "")
			}
		}
		m.pools = append(m.pools, p)
	}
	m.a.SetPools(m.pools)
}

func (m *fuzzModel) request(in *byteReader) Request {
	name := fuzzServices[in.next(len(fuzzServices))]
	fams := fuzzFamilies[in.next(len(fuzzFamilies))]
	r := svc(name, stack(fams.policy, fams.fams...))
	if r.Namespace == "a" {
		r.NamespaceLabels = map[string]string{"team": "a"}
	}
	r.SharingKey = []string{"", "k1", "k2"}[in.next(3)]
	r.Ports = fuzzPorts[in.next(len(fuzzPorts))]
	r.Internal = in.next(4) == 0
	if n := in.next(4); n > 0 {
		r.Pools = []string{fmt.Sprintf("p%d", n-1)}
	}
	for range in.next(3) {
		r.IPs = append(r.IPs, fuzzAddrs[in.next(len(fuzzAddrs))])
	}
	return r
}

func (m *fuzzModel) restore(in *byteReader) {
	r := m.request(in)
	var as []netip.Addr
	for range 1 + in.next(2) {
		as = append(as, fuzzAddrs[in.next(len(fuzzAddrs))])
	}
	before := m.holds[r.Service]
	if err := m.a.Restore(r, as); err != nil {
		if got := m.a.Holding(r.Service); !slices.Equal(got, before) {
			m.t.Fatalf("failed Restore(%s) changed its holding from %v to %v", r.Service, before, got)
		}
		return
	}
	m.holds[r.Service] = m.a.Holding(r.Service)
	m.recorded[r.Service] = r
	m.served[r.Service] = false
}

func (m *fuzzModel) release(in *byteReader) {
	name := fuzzServices[in.next(len(fuzzServices))]
	freed := m.a.Release(name)
	held := m.holds[name]
	delete(m.holds, name)
	delete(m.recorded, name)
	delete(m.served, name)
	var want []netip.Addr
	for _, addr := range held {
		if !m.heldByAnyone(addr) {
			want = append(want, addr)
		}
	}
	sortAddrs(freed)
	sortAddrs(want)
	if !slices.Equal(freed, want) {
		m.t.Fatalf("Release(%s) = %v, want %v (it held %v)", name, freed, want, held)
	}
}

func (m *fuzzModel) heldByAnyone(addr netip.Addr) bool {
	for _, as := range m.holds {
		if slices.Contains(as, addr) {
			return true
		}
	}
	return false
}

func (m *fuzzModel) allocate(in *byteReader) { m.allocateFor(m.request(in)) }

// again allocates a Service with the request it was last served (or restored) for, as a resync
// or a pool change does.
func (m *fuzzModel) again(in *byteReader) {
	r, ok := m.recorded[fuzzServices[in.next(len(fuzzServices))]]
	if ok {
		m.allocateFor(r)
	}
}

func (m *fuzzModel) allocateFor(r Request) {
	before := m.holds[r.Service]
	res, err := m.a.Allocate(r)
	if err != nil {
		if _, ok := err.(*Error); !ok {
			m.t.Fatalf("Allocate(%s) error %T %v, want *Error", r.Service, err, err)
		}
		if !slices.Equal(res.Addrs, before) {
			m.t.Fatalf("failed Allocate(%+v) = %v, want the old %v (%v)", r, res.Addrs, before, err)
		}
		return
	}
	if len(res.Addrs) == 0 {
		m.t.Fatalf("Allocate(%+v) succeeded with no address", r)
	}
	wantFams := r.Families
	if r.Policy == SingleStack {
		wantFams = wantFams[:1]
	}
	pos := -1
	for _, addr := range res.Addrs {
		i := slices.Index(wantFams, FamilyOf(addr))
		if i <= pos {
			m.t.Fatalf("Allocate(%+v) = %v: families not one each in the order %v", r, res.Addrs, wantFams)
		}
		pos = i
		if slices.Contains(before, addr) {
			continue
		}
		// A new address must come from the usable pool the result names.
		name, ok := m.a.PoolOf(addr)
		if !ok || name != res.Pool {
			m.t.Fatalf("Allocate(%+v) handed out %s from %q, but it is in pool %q (%v)", r, addr, res.Pool, name, ok)
		}
		p := m.pool(name)
		// Joining a sharing group's address is not handing it out: that one may be buggy.
		if p.AvoidBuggyIPs && isBuggy(addr) && !m.heldByAnyone(addr) {
			m.t.Fatalf("Allocate(%+v) handed out %s from %s, which avoids buggy addresses", r, addr, name)
		}
		if p.Visibility == Internal != r.Internal {
			m.t.Fatalf("Allocate(%+v) handed out %s from %s of visibility %s", r, addr, name, p.Visibility)
		}
	}
	for _, want := range r.IPs {
		if !slices.Contains(res.Addrs, want.Unmap()) {
			m.t.Fatalf("Allocate(%+v) = %v, without the requested %s", r, res.Addrs, want)
		}
	}
	if r.Policy == RequireDualStack && len(res.Addrs) != 2 {
		m.t.Fatalf("Allocate(%+v) = %v, want both families", r, res.Addrs)
	}
	// Pool edits never move a Service that asks for what it was served for before.
	if prev := m.recorded[r.Service]; m.served[r.Service] && sameRequest(prev, r) {
		for _, addr := range before {
			if !slices.Contains(res.Addrs, addr) {
				m.t.Fatalf("Allocate(%+v) = %v: the same request as before moved it from %v", r, res.Addrs, before)
			}
		}
	}
	m.holds[r.Service] = slices.Clone(res.Addrs)
	m.recorded[r.Service] = r
	m.served[r.Service] = true
}

func (m *fuzzModel) pool(name string) Pool {
	for _, p := range m.pools {
		if p.Name == name {
			return p
		}
	}
	m.t.Fatalf("no pool %s", name)
	return Pool{}
}

func (m *fuzzModel) check() {
	t := m.t
	holders := map[netip.Addr][]string{}
	for _, name := range fuzzServices {
		got := m.a.Holding(name)
		if !slices.Equal(got, m.holds[name]) {
			t.Fatalf("Holding(%s) = %v, want %v", name, got, m.holds[name])
		}
		for _, addr := range got {
			holders[addr] = append(holders[addr], name)
		}
	}
	for addr, names := range holders {
		for i, x := range names {
			for _, y := range names[i+1:] {
				if !mayShareRecorded(m.recorded[x], m.recorded[y]) {
					t.Fatalf("%s is held by %s (%+v) and %s (%+v), which may not share", addr, x, m.recorded[x], y, m.recorded[y])
				}
			}
		}
	}
	for _, p := range m.pools {
		var set netipx.IPSetBuilder
		for _, r := range p.Ranges {
			set.AddRange(r)
		}
		s, _ := set.IPSet()
		var capacity, allocated [2]int64
		present := [2]bool{}
		for _, r := range s.Ranges() {
			fi := famIdx(FamilyOf(r.From()))
			present[fi] = true
			for addr := r.From(); ; addr = addr.Next() {
				if !(p.AvoidBuggyIPs && isBuggy(addr)) {
					capacity[fi]++
					if len(holders[addr]) > 0 {
						allocated[fi]++
					}
				}
				if addr == r.To() {
					break
				}
			}
		}
		st, ok := m.a.PoolStatus(p.Name)
		if !ok {
			t.Fatalf("PoolStatus(%s) unknown", p.Name)
		}
		for fi, f := range families {
			if !present[fi] {
				if _, ok := st.Capacity[f]; ok {
					t.Fatalf("PoolStatus(%s) reports %s, which it does not have", p.Name, f)
				}
				continue
			}
			want := [3]string{fmt.Sprint(capacity[fi]), fmt.Sprint(allocated[fi]), big.NewInt(capacity[fi] - allocated[fi]).String()}
			got := [3]string{st.Capacity[f], st.Allocated[f], st.Available[f]}
			if got != want {
				t.Fatalf("PoolStatus(%s)[%s] = %v, want %v (holders %v)", p.Name, f, got, want, holders)
			}
		}
	}
}

func sameRequest(x, y Request) bool {
	return x.Policy == y.Policy && slices.Equal(x.Families, y.Families) && slices.Equal(x.Pools, y.Pools) &&
		x.Internal == y.Internal && x.SharingKey == y.SharingKey && slices.Equal(x.Ports, y.Ports) && slices.Equal(x.IPs, y.IPs)
}

func mayShareRecorded(x, y Request) bool {
	hx, hy := holderOf(&x), holderOf(&y)
	return hx.mayShare(&hy)
}
