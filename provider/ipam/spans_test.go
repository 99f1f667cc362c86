package ipam

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestSpanSet_AgreesWithBruteForce(t *testing.T) {
	const size = 300
	rng := rand.New(rand.NewPCG(3, 5))
	s := newSpanSet()
	var used [size]bool
	for range 5000 {
		x := rng.UintN(size)
		if used[x] {
			s.remove(u128{0, uint64(x)})
		} else {
			s.add(u128{0, uint64(x)}, u128{0, size - 1})
		}
		used[x] = !used[x]

		lo, hi := rng.UintN(size), rng.UintN(size)
		if lo > hi {
			lo, hi = hi, lo
		}
		wantFree, wantCount := -1, 0
		for i := lo; i <= hi; i++ {
			if !used[i] && wantFree < 0 {
				wantFree = int(i)
			}
			if used[i] {
				wantCount++
			}
		}
		got, ok := s.firstFree(u128{0, uint64(lo)}, u128{0, uint64(hi)})
		if ok != (wantFree >= 0) || (ok && got.lo != uint64(wantFree)) {
			t.Fatalf("firstFree(%d, %d) = %d, %v; want %d", lo, hi, got.lo, ok, wantFree)
		}
		if c := s.count(u128{0, uint64(lo)}, u128{0, uint64(hi)}); c != (u128{0, uint64(wantCount)}) {
			t.Fatalf("count(%d, %d) = %d, want %d", lo, hi, c.lo, wantCount)
		}
	}
	// Spans must be disjoint and never touch: the free search relies on it.
	var prev *span
	s.t.Ascend(func(sp span) bool {
		if sp.to.less(sp.from) || (prev != nil && !prev.to.next().less(sp.from)) {
			t.Fatalf("spans %v and %v overlap or touch", *prev, sp)
		}
		prev = &sp
		return true
	})
}

func TestSpanSet_HandlesTheEndsOfTheAddressSpace(t *testing.T) {
	s := newSpanSet()
	s.add(maxV6, maxV6)
	s.add(maxV6.prev(), maxV6)
	s.add(u128{}, maxV6)
	if _, ok := s.firstFree(maxV6.prev(), maxV6); ok {
		t.Error("the last two addresses are used, but a free one was found")
	}
	if got, ok := s.firstFree(u128{}, maxV6); !ok || got != (u128{0, 1}) {
		t.Errorf("firstFree = %v, %v; want ::1", got, ok)
	}
	if c := s.count(u128{}, maxV6); c != (u128{0, 3}) {
		t.Errorf("count = %v, want 3", c)
	}
	s.remove(maxV6)
	if got, ok := s.firstFree(maxV6.prev(), maxV6); !ok || got != maxV6 {
		t.Errorf("firstFree = %v, %v; want the last address", got, ok)
	}
}

func TestDenseNumbering_SkipsExactlyTheBuggyAddresses(t *testing.T) {
	from, to := u128Of(netip.MustParseAddr("172.31.0.0")), u128Of(netip.MustParseAddr("172.31.3.255"))
	want := uint64(0)
	first := true
	for v := from.lo; v <= to.lo; v++ {
		a := addrOf(u128{0, v}, IPv4)
		if isBuggy(a) {
			continue
		}
		d := dense(v)
		if !first && d.lo != want {
			t.Fatalf("dense(%s) = %d, want %d", a, d.lo, want)
		}
		first = false
		want = d.lo + 1
		if back := sparse(d); back.lo != v {
			t.Fatalf("sparse(dense(%s)) = %s", a, addrOf(back, IPv4))
		}
	}
	for _, c := range []struct {
		from, to string
		size     uint64 // 0: nothing to hand out
	}{
		{"172.31.0.255", "172.31.1.0", 0},
		{"172.31.0.255", "172.31.1.1", 1},
		{"172.31.0.0", "172.31.0.255", 254},
		{"172.31.0.254", "172.31.1.1", 2},
		{"0.0.0.0", "0.0.0.0", 0},
		{"255.255.255.255", "255.255.255.255", 0},
	} {
		lo, hi, ok := denseRange(u128Of(netip.MustParseAddr(c.from)).lo, u128Of(netip.MustParseAddr(c.to)).lo)
		size := uint64(0)
		if ok {
			size = hi.lo - lo.lo + 1
		}
		if size != c.size {
			t.Errorf("%s-%s holds %d non-buggy addresses, want %d", c.from, c.to, size, c.size)
		}
	}
}

func TestAddrConversion_RoundTrips(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "172.31.0.1", "255.255.255.255", "::", "fd31::1", "fd31:0:0:1:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		a := netip.MustParseAddr(s)
		if got := addrOf(u128Of(a), FamilyOf(a)); got != a {
			t.Errorf("%s came back as %s", a, got)
		}
	}
}
