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

// A lab of MaxNodes nodes, most of them speaker-only, fits its slot: every
// node has its own LAN addresses and MAC, none of them the router's, the
// client's, the API server's, a probe sender's or in the L2 pool, a node name and
// a switch port name that fits a link name; the wide L2 range lies in the
// slot's block, on no other subnet of the plan, and the ARP probe senders
// are on the LAN and held by no host.
func TestPlanSpeakerOnlyNodes(t *testing.T) {
	for i := 1; i <= MaxIndex; i++ {
		full, err := NewPlan(i, 3)
		if err != nil {
			t.Fatal(err)
		}
		p, err := full.WithSpeakerOnly(MaxNodes - 3)
		if err != nil {
			t.Fatal(err)
		}
		if p.AllNodes() != MaxNodes || p.SpeakerOnlyNode(3) || !p.SpeakerOnlyNode(4) || !p.SpeakerOnlyNode(MaxNodes) || p.SpeakerOnlyNode(MaxNodes+1) {
			t.Fatalf("slot %d: %d nodes, speaker-only 3/4/%d/%d: %v/%v/%v/%v", i, p.AllNodes(), MaxNodes, MaxNodes+1,
				p.SpeakerOnlyNode(3), p.SpeakerOnlyNode(4), p.SpeakerOnlyNode(MaxNodes), p.SpeakerOnlyNode(MaxNodes+1))
		}
		if len(p.Namespaces()) != 4+MaxNodes {
			t.Errorf("slot %d: %d namespaces, want %d", i, len(p.Namespaces()), 4+MaxNodes)
		}
		lan := p.LAN()
		hosts := map[netip.Addr]string{}
		for _, group := range [][]netip.Addr{p.RouterLAN(), p.ClientAddrs(), p.APIAddrs()} {
			for _, a := range group {
				hosts[a] = "a host"
			}
		}
		names, ports, macs := map[string]int{}, map[string]int{}, map[string]int{}
		for n := 1; n <= p.AllNodes(); n++ {
			for j, a := range p.NodeAddrs(n) {
				if !lan[j].Contains(a) {
					t.Errorf("slot %d: node %d's %s is not on the LAN %s", i, n, a, lan[j])
				}
				if who, dup := hosts[a]; dup {
					t.Errorf("slot %d: node %d's %s is also %s's", i, n, a, who)
				}
				hosts[a] = fmt.Sprintf("node %d", n)
				for _, pool := range p.L2Pool() {
					if pool.Contains(a) {
						t.Errorf("slot %d: node %d's %s is in the L2 pool %s", i, n, a, pool)
					}
				}
				if a == lan[j].Addr() || a.Is4() && a.As4()[3] == 255 {
					t.Errorf("slot %d: node %d's %s is the LAN's network or broadcast address", i, n, a)
				}
			}
			if mac, v4 := p.NodeMAC(n), p.NodeAddrs(n)[0].As4(); mac[5] != v4[3] || mac[0]&1 != 0 || mac[0]&2 == 0 {
				t.Errorf("slot %d: node %d's MAC %s does not name its host number %d, or is not a local unicast MAC", i, n, mac, v4[3])
			}
			if p.NodeByMAC(p.NodeMAC(n)) != n {
				t.Errorf("slot %d: NodeByMAC(NodeMAC(%d)) = %d", i, n, p.NodeByMAC(p.NodeMAC(n)))
			}
			names[p.NodeName(n)]++
			ports[p.PortName(n)]++
			macs[p.NodeMAC(n).String()]++
			if len(p.PortName(n)) > 15 {
				t.Errorf("slot %d: port name %s is longer than a link name may be", i, p.PortName(n))
			}
			if p.SpeakerOnlyNode(n) != (p.NodePodCIDRs(n) == nil) {
				t.Errorf("slot %d: node %d: speaker-only %v but pod ranges %v", i, n, p.SpeakerOnlyNode(n), p.NodePodCIDRs(n))
			}
		}
		if len(names) != MaxNodes || len(ports) != MaxNodes || len(macs) != MaxNodes {
			t.Errorf("slot %d: %d node names, %d port names, %d MACs for %d nodes", i, len(names), len(ports), len(macs), MaxNodes)
		}
		if got := p.NodeName(4); got != "worker-004.k8s.example.internal" {
			t.Errorf("slot %d: speaker-only node 4 is called %q", i, got)
		}
		for r := 0; r < 16; r++ {
			a := p.probeSender(r)
			if !lan[0].Contains(a) {
				t.Errorf("slot %d: probe sender %s is not on the LAN", i, a)
			}
			if who, held := hosts[a]; held {
				t.Errorf("slot %d: probe sender %s is %s's address", i, a, who)
			}
		}
		block := []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(16 * i), 0}), 20),
			netip.MustParsePrefix(fmt.Sprintf("fd31:0:0:%x00::/56", i)),
		}
		var others []netip.Prefix
		for _, group := range [][]netip.Prefix{lan, p.External(), p.L2Pool(), p.RoutedPool(), p.ServiceCIDRs(), p.PodCIDRs()} {
			others = append(others, group...)
		}
		for j, w := range p.L2ScalePool() {
			if !block[j].Contains(w.Addr()) || w.Bits() < block[j].Bits() {
				t.Errorf("slot %d: wide L2 range %s is outside the slot's block %s", i, w, block[j])
			}
			if w.Addr().Is4() && w.Bits() > 25 {
				t.Errorf("slot %d: wide L2 range %s has no room for 100 Services", i, w)
			}
			for _, o := range others {
				if o.Overlaps(w) {
					t.Errorf("slot %d: wide L2 range %s overlaps %s", i, w, o)
				}
			}
		}
	}
	p, _ := NewPlan(1, 3)
	if _, err := p.WithSpeakerOnly(MaxNodes - 2); err == nil {
		t.Error("WithSpeakerOnly accepted more than MaxNodes nodes")
	}
	if p.AllNodes() != 3 || p.SpeakerOnlyNode(3) || p.NodeName(3) != "node3" {
		t.Errorf("a plan without speaker-only nodes: %d nodes, node 3 %q speaker-only %v", p.AllNodes(), p.NodeName(3), p.SpeakerOnlyNode(3))
	}
}

// Nodes past 89 take the LAN host numbers that the client (.100), the ARP
// probe senders (.101-.116), the L2 pool (.192-.223) and the API server
// (.254) leave free, so that a lab of 100 nodes or more fits its /24.
func TestNodeHostsSkipReservedNumbers(t *testing.T) {
	p, err := NewPlan(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	reserved := map[int]string{0: "the network", 1: "the router", 100: "the client", 254: "the API server", 255: "broadcast"}
	for h := 101; h <= 116; h++ {
		reserved[h] = "an ARP probe sender"
	}
	for h := 192; h <= 223; h++ {
		reserved[h] = "the L2 pool"
	}
	seen := map[int]int{}
	for n := 1; n <= MaxNodes; n++ {
		h := nodeHost(n)
		if h < 2 || h > 254 {
			t.Fatalf("node %d: host number %d is outside the LAN", n, h)
		}
		if who, ok := reserved[h]; ok {
			t.Errorf("node %d: host number %d is %s's", n, h, who)
		}
		if m, dup := seen[h]; dup {
			t.Errorf("nodes %d and %d share host number %d", m, n, h)
		}
		seen[h] = n
		if n <= 89 && h != 10+n {
			t.Errorf("node %d: host number %d, want %d as before", n, h, 10+n)
		}
	}
	if got, want := nodeHost(100), 127; got != want {
		t.Errorf("node 100: host number %d, want %d", got, want)
	}
	if got := p.NodeAddrs(100)[0]; got != netip.MustParseAddr("172.31.16.127") {
		t.Errorf("node 100's IPv4 address is %s", got)
	}
	// MaxNodes is as high as it can be: past node 1's .11 every number is
	// a node's or reserved.
	for h := 11; h <= 254; h++ {
		if _, node := seen[h]; !node && reserved[h] == "" {
			t.Errorf("host number %d is free: MaxNodes could be higher", h)
		}
	}
}

// TestPodRanges: what CNI hands out on a real node is inside the node's pod
// range and never an address that a process endpoint may take.
func TestPodRanges(t *testing.T) {
	p, err := NewPlan(1, 15)
	if err != nil {
		t.Fatal(err)
	}
	r := p.podRanges(1)
	want := []string{"172.31.18.16/28 gw 172.31.18.23 172.31.18.24-172.31.18.30", "fd31:0:0:102:1::/80 gw fd31::102:1:0:0:7 fd31::102:1:0:0:8-fd31::102:1:0:0:ff"}
	for i, w := range want {
		got := fmt.Sprintf("%s gw %s %s-%s", netip.PrefixFrom(r[i].Subnet, r[i].Bits), r[i].Gateway, r[i].First, r[i].Last)
		if got != w {
			t.Errorf("family %d: got %s, want %s", i, got, w)
		}
	}
	for n := 1; n <= p.Nodes; n++ {
		cidrs := p.NodePodCIDRs(n)
		for i, r := range p.podRanges(n) {
			for _, a := range []netip.Addr{r.Gateway, r.First, r.Last} {
				if !cidrs[i].Contains(a) {
					t.Errorf("node %d: %s is outside the node's pod range %s", n, a, cidrs[i])
				}
			}
			for e := 1; e < cniGateway; e++ {
				if a := p.PodAddrs(n, e)[i]; a.Compare(r.Gateway) >= 0 {
					t.Errorf("node %d: endpoint address %s is in CNI's part of the range (from %s)", n, a, r.Gateway)
				}
			}
		}
	}
}
