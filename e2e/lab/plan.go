package lab

import (
	"fmt"
	"net"
	"net/netip"
)

// MaxIndex is the number of labs that can run side by side: each takes one
// /20 of 172.31.0.0/16 and the matching /56 of fd31::/48 (the last /20 is left
// to the integration tests' Service ranges).
const MaxIndex = 14

// Plan is where everything of one lab lives: names and addresses derived from
// its index, so two labs never share a namespace, link or subnet.
//
// Lab k (1..MaxIndex) uses 172.31.16k.0/20 and fd31:0:0:k00::/56:
//
//	LAN (bridge)        172.31.16k.0/24        fd31:0:0:k00::/64
//	  router .1, client .100, API server (root namespace) .254
//	  node n .(10+n) for n up to 89, then .117-.191 and .224-.253 (nodeHost)
//	  ARP probe senders .101-.116 (see ARPProbe; no host holds them)
//	  L2 pool           172.31.16k.192/27      fd31:0:0:k00::1:0/112
//	external network    172.31.(16k+1).0/24    fd31:0:0:k01::/64   router .1, client .100
//	pods of node n      172.31.(16k+2).16n/28  fd31:0:0:k02:n::/80
//	wide L2 range       172.31.(16k+3).0/24    fd31:0:0:k03::/64   on-link on the LAN (see L2ScalePool)
//	routed pool         172.31.(16k+4).0/24    fd31:0:0:k04::/64
//	Service ClusterIPs  172.31.(16k+12).0/22   fd31:0:0:k0c::/108
type Plan struct {
	Index int
	// Nodes are the full nodes (1..Nodes): kube-proxy, endpoints, pod routes.
	Nodes int
	// SpeakerOnly nodes follow them (Nodes+1..AllNodes()): a namespace on
	// the LAN, a Node object and an ironlb-speaker, nothing else (scale.go).
	SpeakerOnly int
}

// NewPlan checks the index and node count.
func NewPlan(index, nodes int) (Plan, error) {
	if index < 1 || index > MaxIndex {
		return Plan{}, fmt.Errorf("lab index %d not in 1..%d", index, MaxIndex)
	}
	if nodes < 1 || nodes > 15 {
		return Plan{}, fmt.Errorf("lab node count %d not in 1..15", nodes)
	}
	return Plan{Index: index, Nodes: nodes}, nil
}

// Prefix starts every namespace and root-namespace link name of this lab.
func (p Plan) Prefix() string { return fmt.Sprintf("ilb%d", p.Index) }

// Namespace names.
func (p Plan) SwitchNS() string      { return p.Prefix() + "-switch" }
func (p Plan) RouterNS() string      { return p.Prefix() + "-router" }
func (p Plan) ClientNS() string      { return p.Prefix() + "-client" }
func (p Plan) ExternalNS() string    { return p.Prefix() + "-external" }
func (p Plan) NodeNS(n int) string   { return fmt.Sprintf("%s-node%d", p.Prefix(), n) }
func (p Plan) RootLink() string      { return p.Prefix() + "-api" }
func (p Plan) NodeName(n int) string { return nodeName(p, n) }

// Namespaces lists every namespace of the lab.
func (p Plan) Namespaces() []string {
	ns := []string{p.SwitchNS(), p.RouterNS(), p.ClientNS(), p.ExternalNS()}
	for n := 1; n <= p.AllNodes(); n++ {
		ns = append(ns, p.NodeNS(n))
	}
	return ns
}

func (p Plan) v4(third, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 31, byte(16*p.Index + third), byte(host)})
}

// v6 is fd31:0:0:<index><subnet>::<host>, host written in hex like the
// IPv4 host number in decimal (node 1 is .11 and ::11).
func (p Plan) v6(subnet int, host string) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd31:0:0:%x%02x::%s", p.Index, subnet, host))
}

func prefix(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

// LAN is the bridged segment of nodes, LAN client, router and API server.
func (p Plan) LAN() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(0, 0), 24), prefix(p.v6(0, ""), 64)}
}

// External is the network behind the router.
func (p Plan) External() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(1, 0), 24), prefix(p.v6(1, ""), 64)}
}

// L2Pool is inside the LAN, for addresses answered by ARP/NDP.
func (p Plan) L2Pool() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(0, 192), 27), prefix(p.v6(0, "1:0"), 112)}
}

// RoutedPool is outside every subnet, for addresses reached through routes.
func (p Plan) RoutedPool() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(4, 0), 24), prefix(p.v6(4, ""), 64)}
}

// ServiceCIDRs are kube-apiserver's ClusterIP ranges.
func (p Plan) ServiceCIDRs() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(12, 0), 22), prefix(p.v6(12, ""), 108)}
}

// PodCIDRs are the pod ranges of all nodes together (kube-proxy's --cluster-cidr).
func (p Plan) PodCIDRs() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(2, 0), 24), prefix(p.v6(2, ""), 64)}
}

// NodePodCIDRs are node n's pod ranges; a speaker-only node has none.
func (p Plan) NodePodCIDRs(n int) []netip.Prefix {
	if p.SpeakerOnlyNode(n) {
		return nil
	}
	return []netip.Prefix{prefix(p.v4(2, 16*n), 28), prefix(netip.MustParseAddr(fmt.Sprintf("fd31:0:0:%x02:%x::", p.Index, n)), 80)}
}

// PodAddrs is the i-th pod address pair of node n (i from 1).
func (p Plan) PodAddrs(n, i int) []netip.Addr {
	return []netip.Addr{p.v4(2, 16*n+i), netip.MustParseAddr(fmt.Sprintf("fd31:0:0:%x02:%x::%x", p.Index, n, i))}
}

// Addresses of the hosts on the LAN, IPv4 then IPv6.
func (p Plan) RouterLAN() []netip.Addr   { return []netip.Addr{p.v4(0, 1), p.v6(0, "1")} }
func (p Plan) ClientAddrs() []netip.Addr { return []netip.Addr{p.v4(0, 100), p.v6(0, "100")} }
func (p Plan) APIAddrs() []netip.Addr    { return []netip.Addr{p.v4(0, 254), p.v6(0, "254")} }
func (p Plan) NodeAddrs(n int) []netip.Addr {
	h := nodeHost(n)
	return []netip.Addr{p.v4(0, h), p.v6(0, fmt.Sprint(h))}
}

// nodeHost is node n's host number on the LAN: 10+n up to node 89, below
// the client's .100; then the numbers the client, the ARP probe senders
// (.101-.116), the L2 pool (.192-.223) and the API server (.254) leave
// free, up to MaxNodes.
func nodeHost(n int) int {
	switch {
	case n <= 89:
		return 10 + n
	case n <= 164:
		return 117 + (n - 90)
	default:
		return 224 + (n - 165)
	}
}

// Addresses on the external network.
func (p Plan) RouterExternal() []netip.Addr { return []netip.Addr{p.v4(1, 1), p.v6(1, "1")} }
func (p Plan) ExternalAddrs() []netip.Addr  { return []netip.Addr{p.v4(1, 100), p.v6(1, "100")} }

// NodeMAC is node n's LAN address, chosen so that it names the node: the last
// byte is its IPv4 host number.
func (p Plan) NodeMAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x31, byte(p.Index), 0, 0, byte(nodeHost(n))}
}

// NodeByMAC is the node whose LAN address mac is, 0 if none.
func (p Plan) NodeByMAC(mac net.HardwareAddr) int {
	for n := 1; n <= p.AllNodes(); n++ {
		if p.NodeMAC(n).String() == mac.String() {
			return n
		}
	}
	return 0
}

// RouterASN and NodeASN are the lab's BGP autonomous systems: the router's
// and the one every node's speaker uses.
const (
	RouterASN = 64512
	NodeASN   = 64513
)

// TestPool is the i-th (0..15) slice of the routed pool, so that tests that
// run one after another in a lab never share addresses.
func (p Plan) TestPool(i int) []netip.Prefix {
	return []netip.Prefix{
		prefix(p.v4(4, 16*(i%16)), 28),
		prefix(netip.MustParseAddr(fmt.Sprintf("fd31:0:0:%x04:%x::", p.Index, i%16)), 112),
	}
}

// L2TestPool is the i-th (0..7) slice of the L2 pool: four IPv4 and sixteen
// IPv6 addresses on the LAN, so that tests in one lab never share addresses.
func (p Plan) L2TestPool(i int) []netip.Prefix {
	return []netip.Prefix{
		prefix(p.v4(0, 192+4*(i%8)), 30),
		prefix(netip.MustParseAddr(fmt.Sprintf("fd31:0:0:%x00::1:%x", p.Index, 16*(i%8))), 124),
	}
}

// ExcludeLabel keeps a node from announcing any address.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"
