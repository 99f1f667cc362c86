package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"go4.org/netipx"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// advertisement is one address announced by BGP: every eligible node sends
// a route for it, with itself as next hop, to the peers the pool selects.
type advertisement struct {
	addr        netip.Addr
	prefix      netip.Prefix
	pool        string
	nodes       []string            // eligible nodes, sorted
	peers       map[string][]string // node -> names of the peers it sends to
	communities []string
	localPref   *uint32
	services    []types.NamespacedName
	reason      string // why no node announces it
	outside     string // why the pool announcing it does not hand it out (outsidePool)
}

// bgpNodes are the nodes that announce svc's address from pool, filling
// peersOf with the peers each of them sends to, and why none does.
func bgpNodes(in inputs, svc *lbService, pool *v1alpha1.IPPool, peers []*v1alpha1.BGPPeer, peersOf map[string][]string) (map[string]bool, string) {
	nodeSel, err := selectorOf(pool.Spec.BGP.NodeSelector)
	if err != nil {
		return nil, fmt.Sprintf("IPPool %s has an invalid bgp.nodeSelector: %v", pool.Name, err)
	}
	peerSel, err := selectorOf(pool.Spec.BGP.PeerSelector)
	if err != nil {
		return nil, fmt.Sprintf("IPPool %s has an invalid bgp.peerSelector: %v", pool.Name, err)
	}
	local, withEndpoints := in.localOnly(svc)
	nodes := map[string]bool{}
	var why []string
	for _, name := range slices.Sorted(maps.Keys(in.nodes)) {
		node := in.nodes[name]
		selected := peersFor(node, peers, peerSel)
		switch {
		case !nodeSel.Matches(labels.Set(node.Labels)):
			why = append(why, name+": not selected by the pool's bgp.nodeSelector")
		case hasLabel(node, LabelExcludeFromLB):
			why = append(why, name+": labelled "+LabelExcludeFromLB)
		case networkUnavailable(node):
			why = append(why, name+": NetworkUnavailable")
		case len(selected) == 0:
			why = append(why, name+": no BGPPeer selects it and is selected by the pool")
		case local && !withEndpoints[name]:
			why = append(why, name+": no ready local endpoint (externalTrafficPolicy: Local)")
		default:
			nodes[name] = true
			peersOf[name] = selected
		}
	}
	if len(why) == 0 {
		why = []string{"the cluster has no nodes"}
	}
	return nodes, "no node announces it (" + strings.Join(why, "; ") + ")"
}

// peersFor are the names of the BGPPeers that node peers with and that the
// pool's peerSelector picks.
func peersFor(node *v1.Node, peers []*v1alpha1.BGPPeer, poolSel labels.Selector) []string {
	var names []string
	for _, p := range peers {
		sel, err := selectorOf(p.Spec.NodeSelector)
		if err != nil || !sel.Matches(labels.Set(node.Labels)) || !poolSel.Matches(labels.Set(p.Labels)) {
			continue
		}
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// aggregate is the prefix announced for addr from pool: the address
// itself, or the pool's aggregation length. An aggregate that would cover
// addresses outside the pool's own ranges is refused: the prefix is
// invalid and the reason says why, for the Announced condition. An address
// the pool no longer holds is announced by itself: no aggregate of the
// pool covers it.
func aggregate(addr netip.Addr, pool *v1alpha1.IPPool) (netip.Prefix, string) {
	adv, bits, name := pool.Spec.BGP, addr.BitLen(), "aggregationLength"
	if addr.Is4() && adv.AggregationLength != nil {
		bits = int(*adv.AggregationLength)
	}
	if addr.Is6() && adv.AggregationLengthV6 != nil {
		bits, name = int(*adv.AggregationLengthV6), "aggregationLengthV6"
	}
	p, err := addr.Prefix(bits)
	if err != nil || bits == addr.BitLen() {
		return netip.PrefixFrom(addr, addr.BitLen()), ""
	}
	var b netipx.IPSetBuilder
	var holds []string
	for _, entry := range pool.Spec.Addresses {
		r, err := entry.IPRange()
		if err != nil || r.From().Is4() != addr.Is4() {
			continue
		}
		b.AddRange(r)
		holds = append(holds, string(entry))
	}
	set, err := b.IPSet()
	if err == nil && set.ContainsPrefix(p) {
		return p, ""
	}
	if err == nil && !set.Contains(addr) {
		return netip.PrefixFrom(addr, addr.BitLen()), ""
	}
	return netip.Prefix{}, fmt.Sprintf("not announced by BGP: IPPool %s's bgp.%s %d would announce %s, which covers addresses outside the pool (it holds %s)",
		pool.Name, name, bits, p, strings.Join(holds, ", "))
}

func communityStrings(cs []v1alpha1.Community) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// message describes an advertisement for the Announced condition.
func (a *advertisement) message() string {
	if len(a.nodes) == 0 {
		return fmt.Sprintf("%s: %s", a.addr, a.reason) + outsideNote(a.outside)
	}
	return fmt.Sprintf("%s by BGP from %s to %s", a.prefix, strings.Join(a.nodes, ","), strings.Join(a.peerNames(), ",")) +
		outsideNote(a.outside)
}

// unsentMessage says, for the Announced condition, that no session that
// should carry the advertisement is Established. It names the nodes and
// peers but not the sessions' states, which change on every connection
// attempt and are in BGPPeer status.
func (a *advertisement) unsentMessage() string {
	return fmt.Sprintf("%s not advertised: no BGP session from %s to %s is Established (BGPPeer status.nodes has each session's state)",
		a.prefix, strings.Join(a.nodes, ","), strings.Join(a.peerNames(), ",")) + outsideNote(a.outside)
}

// peerNames are the peers some node sends the advertisement to, sorted.
func (a *advertisement) peerNames() []string {
	peers := map[string]bool{}
	for _, ps := range a.peers {
		for _, p := range ps {
			peers[p] = true
		}
	}
	return slices.Sorted(maps.Keys(peers))
}

// sessions are the BGP sessions that are Established: by BGPPeer name, the
// nodes whose session with it is.
type sessions map[string]map[string]bool

// sessionsOf reads the Established sessions from the BGPPeers' status,
// where each speaker reports its own node's session (bgpsync.go). A node
// whose speaker stopped without a word keeps the state it last reported.
func sessionsOf(peers []*v1alpha1.BGPPeer) sessions {
	up := sessions{}
	for _, p := range peers {
		for _, n := range p.Status.Nodes {
			if n.State != bgp.StateEstablished {
				continue
			}
			if up[p.Name] == nil {
				up[p.Name] = map[string]bool{}
			}
			up[p.Name][n.Node] = true
		}
	}
	return up
}

// equal reports whether s and t hold the same sessions.
func (s sessions) equal(t sessions) bool {
	return maps.EqualFunc(s, t, maps.Equal)
}

// carried reports whether some node that advertises a sends it over an
// Established session with one of the peers it sends to: then a router has
// the route. It stops at the first such session, so it costs a lookup or
// two while sessions are up, and runs for each of a Service's addresses on
// every sync.
func (a *advertisement) carried(up sessions) bool {
	for _, n := range a.nodes {
		for _, p := range a.peers[n] {
			if up[p][n] {
				return true
			}
		}
	}
	return false
}

// outsideNote adds to an address's part of the Announced condition why the
// pool announcing it does not hand it out.
func outsideNote(outside string) string {
	if outside == "" {
		return ""
	}
	return ", " + outside
}
