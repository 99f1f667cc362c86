// Package speaker is ironlb-speaker's controller: from the Services ironlb
// owns, their EndpointSlices, the Nodes, the IPPools and which speakers are
// alive, every speaker computes the same owner for every address, answers
// ARP/NDP for those it owns, and reports on the Service.
package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Interface info keys: every speaker tells the others, in its Lease, which
// of the interfaces that matter are up, so that all of them rank the same
// nodes.
const (
	infoDefaultIf = "default-if" // the interface that holds the node's InternalIP
	infoIfPrefix  = "if/"        // "if/eth0": "up"
	ifUp          = "up"

	// LabelExcludeFromLB keeps a node from ever announcing.
	LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// inputs is everything the plan depends on. Every speaker has the same
// inputs (from the API server and the heartbeats), so every speaker computes
// the same plan.
type inputs struct {
	services []*lbService                                          // ironlb's, with addresses
	slices   map[types.NamespacedName][]*discoveryv1.EndpointSlice // by Service
	pools    []*v1alpha1.IPPool
	nodes    map[string]*v1.Node
	alive    map[string]map[string]string // live speakers (aliveNodes) and their interface info
	// recorded is the node each Service's Announced condition names as
	// answering an address: it keeps the address while eligible (ownerOf).
	recorded map[netip.Addr]string
	self     string
}

// announcement is one address: who answers for it, where, and why not.
type announcement struct {
	addr       netip.Addr
	pool       string
	poolObj    *v1alpha1.IPPool
	owner      string   // "" when no node may answer
	interfaces []string // the owner's interfaces to answer on
	services   []types.NamespacedName
	reason     string // why there is no owner
	recorded   string // the owner the Services' record named, which ownerOf read
	// outside, when not empty, says why the pool announcing it does not
	// hand it out (outsidePool).
	outside string
	// missing lists nodes that match the pool but lack its interfaces.
	missing map[string]string
}

func (a announcement) protocol() string {
	if a.addr.Is4() {
		return "ARP"
	}
	return "NDP"
}

// eligibleNodes are the nodes that may answer for svc's address from pool,
// and, if there is none, a sentence that says why for each node (built only
// then: with thousands of Services it would cost more than the plan).
// missing gets, by node, why a node the pool selects cannot answer on its
// interfaces.
func eligibleNodes(in inputs, svc *lbService, pool *v1alpha1.IPPool, missing map[string]string) (map[string]bool, string) {
	sel, err := selectorOf(pool.Spec.L2.NodeSelector)
	if err != nil {
		return nil, fmt.Sprintf("IPPool %s has an invalid l2.nodeSelector: %v", pool.Name, err)
	}
	local, withEndpoints := in.localOnly(svc)
	// why is "" for an eligible node; noInterface says the node lacks the
	// pool's interfaces.
	why := func(name string) (reason string, noInterface bool) {
		node := in.nodes[name]
		info, alive := in.alive[name]
		switch {
		case !sel.Matches(labels.Set(node.Labels)):
			return "not selected by the pool's l2.nodeSelector", false
		case hasLabel(node, LabelExcludeFromLB):
			return "labelled " + LabelExcludeFromLB, false
		case networkUnavailable(node):
			return "NetworkUnavailable", false
		case !alive:
			return "no live speaker", false
		case len(answeringInterfaces(pool, info)) == 0:
			return interfaceProblem(pool, info), true
		case local && !withEndpoints[name]:
			return "no ready local endpoint (externalTrafficPolicy: Local)", false
		}
		return "", false
	}
	nodes := map[string]bool{}
	for name := range in.nodes {
		switch reason, noInterface := why(name); {
		case reason == "":
			nodes[name] = true
		case noInterface:
			missing[name] = name + ": " + reason
		}
	}
	if len(nodes) > 0 {
		return nodes, ""
	}
	var reasons []string
	for _, name := range slices.Sorted(maps.Keys(in.nodes)) {
		reason, _ := why(name)
		reasons = append(reasons, name+": "+reason)
	}
	if len(reasons) == 0 {
		reasons = []string{"the cluster has no nodes"}
	}
	return nodes, "no eligible node (" + strings.Join(reasons, "; ") + ")"
}

// l2Candidates are the nodes that may announce for some L2 pool: selected
// by its l2.nodeSelector and not excluded. Only they take part in the
// heartbeats.
func l2Candidates(nodes []*v1.Node, pools []*v1alpha1.IPPool) []*v1.Node {
	var out []*v1.Node
	for _, n := range nodes {
		if hasLabel(n, LabelExcludeFromLB) {
			continue
		}
		for _, p := range pools {
			if p.Spec.L2 == nil {
				continue
			}
			if sel, err := selectorOf(p.Spec.L2.NodeSelector); err == nil && sel.Matches(labels.Set(n.Labels)) {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

func interfaceProblem(pool *v1alpha1.IPPool, info map[string]string) string {
	if len(pool.Spec.L2.Interfaces) == 0 {
		if def := info[infoDefaultIf]; def != "" {
			return "interface " + def + " (the one with the node's InternalIP) is down"
		}
		return "no interface holds the node's InternalIP"
	}
	return fmt.Sprintf("none of the pool's interfaces %v exists and is up", pool.Spec.L2.Interfaces)
}

// answeringInterfaces are the interfaces a node with heartbeat info answers
// on for pool: the pool's interfaces that are up there, or by default the
// one that holds its InternalIP.
func answeringInterfaces(pool *v1alpha1.IPPool, info map[string]string) []string {
	if pool == nil || pool.Spec.L2 == nil {
		return nil
	}
	want := pool.Spec.L2.Interfaces
	if len(want) == 0 {
		if def := info[infoDefaultIf]; def != "" {
			want = []string{def}
		}
	}
	var up []string
	for _, name := range want {
		if info[infoIfPrefix+name] == ifUp {
			up = append(up, name)
		}
	}
	slices.Sort(up)
	return up
}

// poolOf is the pool whose settings announce addr of svc: the one
// ironlb-ccm names on the Service (ironlb.io/allocated-from) if it holds
// addr, else any pool that holds it. An address that left every pool is
// still announced, with the settings of the pool named, as long as that
// pool exists: ironlb-ccm keeps such an address for its Service (a pool
// shrank, or is being deleted, which ironlb-ccm holds up until no Service
// needs it), and so the speakers keep serving it; but only an address
// ironlb-ccm recorded for the Service (ironlb.io/allocated-addresses), so
// that an address another controller writes into the status (two load
// balancers, a migration) is never answered for outside ironlb's pools.
// nil when none.
func poolOf(pools []*v1alpha1.IPPool, svc *lbService, addr netip.Addr) *v1alpha1.IPPool {
	named := svc.allocatedFrom
	var found, namedPool *v1alpha1.IPPool
	for _, p := range pools {
		if p.Name == named {
			namedPool = p
		}
		if !poolContains(p, addr) {
			continue
		}
		if p.Name == named {
			return p
		}
		if found == nil {
			found = p
		}
	}
	if found != nil || namedPool == nil || !recordedFor(svc, addr) {
		return found
	}
	return namedPool
}

// notIronlbs reports whether addr, in svc's status, is another
// controller's: ironlb-ccm recorded the Service's addresses
// (ironlb.io/allocated-addresses, written with the status in one apply)
// and addr is not among them. Two load balancers that both handle a
// Service (a migration, a second implementation) write the status in turn,
// and ironlb-ccm then stops writing it (ConflictingController) but keeps its
// record: the speakers answer only what ironlb allocated, never the other
// controller's address, even one inside an ironlb pool. A Service without a
// record (written before ironlb-ccm kept one) is announced as its status
// says.
func notIronlbs(svc *lbService, addr netip.Addr) bool {
	return svc.recorded && !recordedFor(svc, addr)
}

// recordedFor reports whether ironlb-ccm's record of svc's addresses
// (ironlb.io/allocated-addresses) names addr.
func recordedFor(svc *lbService, addr netip.Addr) bool {
	return slices.Contains(svc.record, addr)
}

// joinAddrs lists addrs as a record does, comma-separated.
func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// outsidePool says why addr, announced with the settings of pool, is not
// one the pool hands out: the pool no longer holds it, or is being deleted;
// "" when it is. The Announced condition says so; the Warning that says
// what to do about it is ironlb-ccm's.
func outsidePool(pool *v1alpha1.IPPool, addr netip.Addr) string {
	switch {
	case !poolContains(pool, addr):
		return "in no IPPool: announced with the settings of IPPool " + pool.Name + ", which no longer holds it"
	case pool.DeletionTimestamp != nil:
		return "IPPool " + pool.Name + ", which announces it, is being deleted"
	}
	return ""
}

func poolContains(p *v1alpha1.IPPool, addr netip.Addr) bool {
	for _, r := range p.Spec.Addresses {
		if rng, err := r.IPRange(); err == nil && rng.Contains(addr) {
			return true
		}
	}
	return false
}

// localOnly reports whether svc has externalTrafficPolicy Local and, if so,
// the nodes with a local endpoint it may use.
func (in inputs) localOnly(svc *lbService) (bool, map[string]bool) {
	if !svc.local {
		return false, nil
	}
	return true, localEndpointNodes(in.slices[svc.key()])
}

// localEndpointNodes are the nodes with a ready endpoint of the Service,
// or, where none is ready, a serving (terminating) one, as kube-proxy uses them.
func localEndpointNodes(slices []*discoveryv1.EndpointSlice) map[string]bool {
	nodes := map[string]bool{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil {
				continue
			}
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ep.Conditions.Serving != nil && *ep.Conditions.Serving
			if ready || serving {
				nodes[*ep.NodeName] = true
			}
		}
	}
	return nodes
}

func selectorOf(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

func hasLabel(n *v1.Node, key string) bool {
	_, ok := n.Labels[key]
	return ok
}

func networkUnavailable(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable && c.Status == v1.ConditionTrue {
			return true
		}
	}
	return false
}
