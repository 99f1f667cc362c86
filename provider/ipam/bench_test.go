package ipam

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkAllocate measures one allocation and its release with the pool in a given state. The
// cost must not grow with the number of used addresses or the size of the pool.
func BenchmarkAllocate(b *testing.B) {
	cases := []struct {
		name  string
		pool  Pool
		fams  []Family
		fill  int // addresses handed out before timing
		keep  int // of those, how many stay held; the rest are released at scattered places
		avoid bool
	}{
		{name: "empty-/28", pool: pool("lab-a", "172.31.0.0/28"), fams: []Family{IPv4}},
		{name: "/16-60000-used", pool: pool("lab-a", "172.31.0.0/16"), fams: []Family{IPv4}, fill: 60000, keep: 60000},
		{name: "/16-60000-used-fragmented", pool: pool("lab-a", "172.31.0.0/16"), fams: []Family{IPv4}, fill: 65536, keep: 60000},
		{name: "/16-60000-used-avoidBuggyIPs", pool: avoidBuggy(pool("lab-a", "172.31.0.0/16")), fams: []Family{IPv4}, fill: 60000, keep: 60000},
		{name: "/64", pool: pool("lab-6", "fd31::/64"), fams: []Family{IPv6}, fill: 60000, keep: 60000},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			a := New()
			a.SetPools([]Pool{c.pool})
			fill(b, a, c.fams, c.fill, c.keep)
			req := svc("default/bench", stack(SingleStack, c.fams...), withPorts("TCP/80"))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := a.Allocate(req); err != nil {
					b.Fatal(err)
				}
				if len(a.Release(req.Service)) != 1 {
					b.Fatal("release freed nothing")
				}
			}
		})
	}
}

// fill hands out n addresses, then releases all but keep of them at scattered places.
func fill(b *testing.B, a *Allocator, fams []Family, n, keep int) {
	b.Helper()
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("default/fill-%d", i)
		if _, err := a.Allocate(svc(names[i], stack(SingleStack, fams...))); err != nil {
			b.Fatalf("fill %d: %v", i, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, i := range rng.Perm(n)[:n-keep] {
		a.Release(names[i])
	}
}
