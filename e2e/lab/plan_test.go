package lab

import (
	"fmt"
	"net/netip"
	"testing"
)

// Every address of every lab slot lies in the slot's own block of the lab
// ranges (so no two slots share a subnet), never in this machine's own
// networks.
func TestPlanAddresses(t *testing.T) {
	forbidden := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fd00::/64")}
	for i := 1; i <= MaxIndex; i++ {
		block := []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(16 * i), 0}), 20),
			netip.MustParsePrefix(fmt.Sprintf("fd31:0:0:%x00::/56", i)),
		}
		p, err := NewPlan(i, 15)
		if err != nil {
			t.Fatal(err)
		}
		var prefixes []netip.Prefix
		for _, group := range [][]netip.Prefix{p.LAN(), p.External(), p.L2Pool(), p.RoutedPool(), p.ServiceCIDRs(), p.PodCIDRs(), p.TestPool(0), p.TestPool(15)} {
			prefixes = append(prefixes, group...)
		}
		var addrs []netip.Addr
		for _, group := range [][]netip.Addr{p.RouterLAN(), p.ClientAddrs(), p.APIAddrs(), p.RouterExternal(), p.ExternalAddrs(), p.NodeAddrs(1), p.NodeAddrs(15), p.PodAddrs(15, 14)} {
			addrs = append(addrs, group...)
		}
		for _, pf := range prefixes {
			addrs = append(addrs, pf.Addr())
			if pf.Bits() < block[0].Bits() && pf.Addr().Is4() || pf.Bits() < block[1].Bits() && pf.Addr().Is6() {
				t.Errorf("slot %d: %s is wider than the slot's block", i, pf)
			}
		}
		for _, a := range addrs {
			if !block[0].Contains(a) && !block[1].Contains(a) {
				t.Errorf("slot %d: %s is outside the slot's blocks %v", i, a, block)
			}
			if !labRanges[0].Contains(a) && !labRanges[1].Contains(a) {
				t.Errorf("slot %d: %s is outside the lab ranges", i, a)
			}
			for _, f := range forbidden {
				if f.Contains(a) {
					t.Errorf("slot %d: %s is in the machine's own %s", i, a, f)
				}
			}
		}
		lan := p.LAN()
		for n := 1; n <= 15; n++ {
			for j, a := range p.NodeAddrs(n) {
				if !lan[j].Contains(a) {
					t.Errorf("slot %d: node %d's %s is not on the LAN %s", i, n, a, lan[j])
				}
			}
			for j, a := range p.PodAddrs(n, 14) {
				if c := p.NodePodCIDRs(n)[j]; !c.Contains(a) || !p.PodCIDRs()[j].Contains(c.Addr()) {
					t.Errorf("slot %d: pod address %s outside node %d's %s", i, a, n, c)
				}
			}
		}
		for j, pf := range p.L2Pool() {
			if !lan[j].Contains(pf.Addr()) {
				t.Errorf("slot %d: L2 pool %s is not on the LAN", i, pf)
			}
		}
		if got := p.NodeByMAC(p.NodeMAC(3)); got != 3 {
			t.Errorf("slot %d: NodeByMAC(NodeMAC(3)) = %d", i, got)
		}
		if len(p.Prefix()+"-api") > 15 {
			t.Errorf("slot %d: link name %s-api is longer than 15 bytes", i, p.Prefix())
		}
	}
	if _, err := NewPlan(MaxIndex+1, 3); err == nil {
		t.Error("NewPlan accepted a slot past MaxIndex")
	}
}
