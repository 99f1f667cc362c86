package speaker

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// bgpPeer is a BGPPeer with labels lbls that peers with the nodes matching
// nodeSel (all when nil).
func bgpPeer(name string, lbls, nodeSel map[string]string) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	p.Spec.Address, p.Spec.ASN, p.Spec.LocalASN = "192.0.2.1", 65001, 65000
	if nodeSel != nil {
		p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: nodeSel}
	}
	return p
}

// bgpPoolWith is a bgpPool whose bgp section edit changes.
func bgpPoolWith(name string, edit func(b *v1alpha1.BGPAdvertisement), addrs ...string) *v1alpha1.IPPool {
	p := bgpPool(name, addrs...)
	edit(p.Spec.BGP)
	return p
}

// bgpSelectors is a bgpPool announcing from the nodes matching nodeSel to
// the peers matching peerSel (all when nil).
func bgpSelectors(name string, nodeSel, peerSel map[string]string, addrs ...string) *v1alpha1.IPPool {
	return bgpPoolWith(name, func(b *v1alpha1.BGPAdvertisement) {
		if nodeSel != nil {
			b.NodeSelector = &metav1.LabelSelector{MatchLabels: nodeSel}
		}
		if peerSel != nil {
			b.PeerSelector = &metav1.LabelSelector{MatchLabels: peerSel}
		}
	}, addrs...)
}

// bothPool announces addrs by L2 on the default interface and by BGP.
func bothPool(name string, addrs ...string) *v1alpha1.IPPool {
	p := l2Pool(name, nil, nil, addrs...)
	p.Spec.BGP = &v1alpha1.BGPAdvertisement{}
	return p
}

func ptr[T any](v T) *T { return &v }

// twoPeers peer with every node and have no labels.
func twoPeers() []*v1alpha1.BGPPeer {
	return []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, nil), bgpPeer("peerB", nil, nil)}
}

// allUp has every node's session with each of peers Established.
func allUp(peers []*v1alpha1.BGPPeer, nodes ...string) sessions {
	up := sessions{}
	for _, p := range peers {
		up[p.Name] = map[string]bool{}
		for _, n := range nodes {
			up[p.Name][n] = true
		}
	}
	return up
}

// everyNode maps each node to the same peers.
func everyNode(peers []string, nodes ...string) map[string][]string {
	m := map[string][]string{}
	for _, n := range nodes {
		m[n] = peers
	}
	return m
}

func onlyAdv(t *testing.T, plan map[netip.Addr]*advertisement, addr string) *advertisement {
	t.Helper()
	a := plan[netip.MustParseAddr(addr)]
	if a == nil || len(plan) != 1 {
		t.Fatalf("plan = %v, want one advertisement of %s", plan, addr)
	}
	return a
}

func setLabels(in *inputs, node string, lbls map[string]string) {
	in.nodes[node].Labels = lbls
}

func TestBGPPlanEligibility(t *testing.T) {
	const noEP = ": no ready local endpoint (externalTrafficPolicy: Local)"
	const noPeer = ": no BGPPeer selects it and is selected by the pool"
	ab := []string{"peerA", "peerB"}
	for _, tc := range []struct {
		name   string
		nodes  []string
		pools  []*v1alpha1.IPPool                   // default: bgpPool b
		peers  []*v1alpha1.BGPPeer                  // default: twoPeers
		svc    *v1.Service                          // default: Cluster s at 10.0.0.1
		edit   func(in *inputs)                     // after world
		want   []string                             // nodes
		wantPs map[string][]string                  // peers; nil: everyNode(ab, want...)
		reason string                               // exact, when want is empty
		check  func(t *testing.T, a *advertisement) // extra
	}{
		{name: "every eligible node", nodes: []string{"n1", "n2", "n3"}, want: []string{"n1", "n2", "n3"}},
		{name: "nodes listed sorted", nodes: []string{"n3", "n1", "n2"}, want: []string{"n1", "n2", "n3"}},
		{name: "pool nodeSelector picks n2", nodes: []string{"n1", "n2", "n3"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", map[string]string{"bgp": "yes"}, nil, "10.0.0.0/24")},
			edit:  func(in *inputs) { setLabels(in, "n2", map[string]string{"bgp": "yes"}) },
			want:  []string{"n2"}},
		{name: "pool nodeSelector picks none", nodes: []string{"n1", "n2"},
			pools:  []*v1alpha1.IPPool{bgpSelectors("b", map[string]string{"bgp": "yes"}, nil, "10.0.0.0/24")},
			reason: "no node announces it (n1: not selected by the pool's bgp.nodeSelector; n2: not selected by the pool's bgp.nodeSelector)"},
		{name: "excluded n1", nodes: []string{"n1", "n2", "n3"},
			edit: func(in *inputs) { setLabels(in, "n1", map[string]string{LabelExcludeFromLB: ""}) },
			want: []string{"n2", "n3"}},
		{name: "all excluded", nodes: []string{"n1"},
			edit:   func(in *inputs) { setLabels(in, "n1", map[string]string{LabelExcludeFromLB: "true"}) },
			reason: "no node announces it (n1: labelled " + LabelExcludeFromLB + ")"},
		{name: "network unavailable n2", nodes: []string{"n1", "n2", "n3"},
			edit: func(in *inputs) { in.nodes["n2"] = node("n2", nil, true) },
			want: []string{"n1", "n3"}},
		{name: "network unavailable only node", nodes: []string{"n1"},
			edit:   func(in *inputs) { in.nodes["n1"] = node("n1", nil, true) },
			reason: "no node announces it (n1: NetworkUnavailable)"},
		{name: "liveness is not BGP's business", nodes: []string{"n1", "n2"},
			edit: func(in *inputs) { delete(in.alive, "n1"); in.alive["n2"] = heartbeat() },
			want: []string{"n1", "n2"}},
		{name: "BGPPeer nodeSelector picks n1", nodes: []string{"n1", "n2", "n3"},
			peers: []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, map[string]string{"rack": "1"})},
			edit:  func(in *inputs) { setLabels(in, "n1", map[string]string{"rack": "1"}) },
			want:  []string{"n1"}, wantPs: map[string][]string{"n1": {"peerA"}}},
		{name: "peers per node differ", nodes: []string{"n1", "n2", "n3"},
			peers: []*v1alpha1.BGPPeer{
				bgpPeer("peerB", nil, map[string]string{"rack": "2"}), bgpPeer("peerA", nil, map[string]string{"rack": "1"}),
				bgpPeer("peerC", nil, nil),
			},
			edit: func(in *inputs) {
				setLabels(in, "n1", map[string]string{"rack": "1"})
				setLabels(in, "n2", map[string]string{"rack": "2"})
			},
			want:   []string{"n1", "n2", "n3"},
			wantPs: map[string][]string{"n1": {"peerA", "peerC"}, "n2": {"peerB", "peerC"}, "n3": {"peerC"}}},
		{name: "no BGPPeer", nodes: []string{"n1", "n2"}, peers: []*v1alpha1.BGPPeer{},
			reason: "no node announces it (n1" + noPeer + "; n2" + noPeer + ")"},
		{name: "BGPPeer selects a node that is not there", nodes: []string{"n1"},
			peers:  []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, map[string]string{"kubernetes.io/hostname": "n9"})},
			reason: "no node announces it (n1" + noPeer + ")"},
		{name: "BGPPeer with an invalid nodeSelector is skipped", nodes: []string{"n1"},
			peers: []*v1alpha1.BGPPeer{bgpPeer("bad", nil, map[string]string{"bad key!": "x"}), bgpPeer("peerA", nil, nil)},
			want:  []string{"n1"}, wantPs: map[string][]string{"n1": {"peerA"}}},
		{name: "pool peerSelector picks by label", nodes: []string{"n1", "n2"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", nil, map[string]string{"tier": "edge"}, "10.0.0.0/24")},
			peers: []*v1alpha1.BGPPeer{
				bgpPeer("peerC", map[string]string{"tier": "edge"}, nil), bgpPeer("peerB", map[string]string{"tier": "core"}, nil),
				bgpPeer("peerA", map[string]string{"tier": "edge"}, nil), bgpPeer("peerD", nil, nil),
			},
			want: []string{"n1", "n2"}, wantPs: everyNode([]string{"peerA", "peerC"}, "n1", "n2")},
		{name: "pool peerSelector and peer nodeSelector together", nodes: []string{"n1", "n2"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", nil, map[string]string{"tier": "edge"}, "10.0.0.0/24")},
			peers: []*v1alpha1.BGPPeer{
				bgpPeer("peerA", map[string]string{"tier": "edge"}, map[string]string{"rack": "1"}),
				bgpPeer("peerB", map[string]string{"tier": "core"}, nil),
			},
			edit: func(in *inputs) { setLabels(in, "n1", map[string]string{"rack": "1"}) },
			want: []string{"n1"}, wantPs: map[string][]string{"n1": {"peerA"}}},
		{name: "pool peerSelector picks none", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpSelectors("b", nil, map[string]string{"tier": "edge"}, "10.0.0.0/24")},
			reason: "no node announces it (n1" + noPeer + ")"},
		{name: "local: ready or serving endpoints", nodes: []string{"n1", "n2", "n3", "n4"},
			svc: local(service("s", "b", "10.0.0.1")),
			edit: func(in *inputs) {
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{
					endpointSlice("s", ep{"n2", true, true}, ep{"n3", false, true}, ep{"n4", false, false}),
				}
			},
			want: []string{"n2", "n3"}},
		{name: "local: endpoints over several slices", nodes: []string{"n1", "n2", "n3"},
			svc: local(service("s", "b", "10.0.0.1")),
			edit: func(in *inputs) {
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{
					endpointSlice("s", ep{"n1", true, true}), endpointSlice("s", ep{"n3", true, false}),
				}
			},
			want: []string{"n1", "n3"}},
		{name: "local: endpoint on a node without a peer", nodes: []string{"n1", "n2"},
			svc:   local(service("s", "b", "10.0.0.1")),
			peers: []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, map[string]string{"rack": "1"})},
			edit: func(in *inputs) {
				setLabels(in, "n1", map[string]string{"rack": "1"})
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{endpointSlice("s", ep{"n2", true, true})}
			},
			reason: "no node announces it (n1" + noEP + "; n2" + noPeer + ")"},
		{name: "local: no endpoint", nodes: []string{"n1", "n2"}, svc: local(service("s", "b", "10.0.0.1")),
			reason: "no node announces it (n1" + noEP + "; n2" + noEP + ")"},
		{name: "reasons of every node, in order", nodes: []string{"n4", "n3", "n2", "n1"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", map[string]string{"bgp": "yes"}, nil, "10.0.0.0/24")},
			peers: []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, map[string]string{"rack": "1"})},
			edit: func(in *inputs) {
				setLabels(in, "n2", map[string]string{"bgp": "yes", LabelExcludeFromLB: ""})
				in.nodes["n3"] = node("n3", map[string]string{"bgp": "yes"}, true)
				setLabels(in, "n4", map[string]string{"bgp": "yes"})
			},
			reason: "no node announces it (n1: not selected by the pool's bgp.nodeSelector; n2: labelled " + LabelExcludeFromLB +
				"; n3: NetworkUnavailable; n4" + noPeer + ")"},
		{name: "no nodes", reason: "no node announces it (the cluster has no nodes)"},
		{name: "invalid pool nodeSelector", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", map[string]string{"bad key!": "x"}, nil, "10.0.0.0/24")},
			check: func(t *testing.T, a *advertisement) {
				if !strings.HasPrefix(a.reason, "IPPool b has an invalid bgp.nodeSelector: ") {
					t.Errorf("reason = %q", a.reason)
				}
			}},
		{name: "invalid pool peerSelector", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", nil, map[string]string{"bad key!": "x"}, "10.0.0.0/24")},
			check: func(t *testing.T, a *advertisement) {
				if !strings.HasPrefix(a.reason, "IPPool b has an invalid bgp.peerSelector: ") {
					t.Errorf("reason = %q", a.reason)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := tc.pools
			if pools == nil {
				pools = []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}
			}
			peers := tc.peers
			if peers == nil {
				peers = twoPeers()
			}
			svc := tc.svc
			if svc == nil {
				svc = service("s", "b", "10.0.0.1")
			}
			in := world(tc.nodes, pools, svc)
			if tc.edit != nil {
				tc.edit(&in)
			}
			a := onlyAdv(t, bgpPlan(in, peers), "10.0.0.1")
			if a.pool != "b" || a.prefix != netip.MustParsePrefix("10.0.0.1/32") {
				t.Errorf("pool %q prefix %s, want b 10.0.0.1/32", a.pool, a.prefix)
			}
			if !slices.Equal(a.services, []types.NamespacedName{key("s")}) {
				t.Errorf("services = %v, want [default/s]", a.services)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
			if !slices.Equal(a.nodes, tc.want) {
				t.Fatalf("nodes = %v (reason %q), want %v", a.nodes, a.reason, tc.want)
			}
			wantPs := tc.wantPs
			if wantPs == nil {
				wantPs = everyNode(ab, tc.want...)
			}
			if len(tc.want) == 0 {
				wantPs = map[string][]string{}
			}
			if !reflect.DeepEqual(a.peers, wantPs) {
				t.Errorf("peers = %v, want %v", a.peers, wantPs)
			}
			switch {
			case len(tc.want) > 0 && a.reason != "":
				t.Errorf("announced, yet reason = %q", a.reason)
			case len(tc.want) == 0 && tc.check == nil && a.reason != tc.reason:
				t.Errorf("reason = %q\nwant     %q", a.reason, tc.reason)
			}
		})
	}
}

// TestBGPNodesReasons checks the per-node reasons bgpNodes gives even when
// some node announces (bgpPlan keeps them only when none does).
func TestBGPNodesReasons(t *testing.T) {
	const noPeer = ": no BGPPeer selects it and is selected by the pool"
	in := world([]string{"n1", "n2", "n3"}, []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, service("s", "b", "10.0.0.1"))
	setLabels(&in, "n1", map[string]string{"rack": "1"})
	peers := []*v1alpha1.BGPPeer{bgpPeer("peerA", nil, map[string]string{"rack": "1"})}
	peersOf := map[string][]string{}
	nodes, why := bgpNodes(in, in.services[0], in.pools[0], peers, peersOf)
	if !reflect.DeepEqual(nodes, map[string]bool{"n1": true}) {
		t.Errorf("nodes = %v, want only n1", nodes)
	}
	if want := "no node announces it (n2" + noPeer + "; n3" + noPeer + ")"; why != want {
		t.Errorf("why = %q\nwant  %q", why, want)
	}
	if !reflect.DeepEqual(peersOf, map[string][]string{"n1": {"peerA"}}) {
		t.Errorf("peersOf = %v, want n1: [peerA]", peersOf)
	}

	a := onlyAdv(t, bgpPlan(in, peers), "10.0.0.1")
	if !slices.Equal(a.nodes, []string{"n1"}) || a.reason != "" {
		t.Errorf("plan: nodes %v reason %q, want [n1] and no reason", a.nodes, a.reason)
	}
}

func TestPeersFor(t *testing.T) {
	n := node("n1", map[string]string{"rack": "1"}, false)
	peers := []*v1alpha1.BGPPeer{
		bgpPeer("z", map[string]string{"tier": "edge"}, nil),
		bgpPeer("a", map[string]string{"tier": "edge"}, map[string]string{"rack": "1"}),
		bgpPeer("m", map[string]string{"tier": "core"}, nil),
		bgpPeer("other-rack", map[string]string{"tier": "edge"}, map[string]string{"rack": "2"}),
		bgpPeer("bad", map[string]string{"tier": "edge"}, map[string]string{"bad key!": "x"}),
	}
	edge := labels.SelectorFromSet(labels.Set{"tier": "edge"})
	for _, tc := range []struct {
		name string
		sel  labels.Selector
		want []string
	}{
		{"everything", labels.Everything(), []string{"a", "m", "z"}},
		{"edge", edge, []string{"a", "z"}},
		{"nothing", labels.Nothing(), nil},
	} {
		if got := peersFor(n, peers, tc.sel); !slices.Equal(got, tc.want) {
			t.Errorf("%s: peersFor = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := peersFor(n, nil, labels.Everything()); got != nil {
		t.Errorf("no peers: peersFor = %v, want nil", got)
	}
}

func TestBGPSharing(t *testing.T) {
	const noEP = ": no ready local endpoint (externalTrafficPolicy: Local)"
	ab := []string{"peerA", "peerB"}
	for _, tc := range []struct {
		name   string
		svcs   []*v1.Service
		eps    map[string][]string // Service -> nodes with its endpoints
		want   []string
		reason string
	}{
		{name: "cluster and cluster", svcs: []*v1.Service{
			service("a", "b", "10.0.0.1"), service("b", "b", "10.0.0.1")},
			want: []string{"n1", "n2", "n3"}},
		{name: "local and cluster", svcs: []*v1.Service{
			service("b", "b", "10.0.0.1"), local(service("a", "b", "10.0.0.1"))},
			eps: map[string][]string{"a": {"n2", "n3"}}, want: []string{"n2", "n3"}},
		{name: "cluster and local", svcs: []*v1.Service{
			local(service("b", "b", "10.0.0.1")), service("a", "b", "10.0.0.1")},
			eps: map[string][]string{"b": {"n1"}}, want: []string{"n1"}},
		{name: "local and local overlap", svcs: []*v1.Service{
			local(service("a", "b", "10.0.0.1")), local(service("b", "b", "10.0.0.1"))},
			eps: map[string][]string{"a": {"n1", "n2"}, "b": {"n2", "n3"}}, want: []string{"n2"}},
		{name: "disjoint local", svcs: []*v1.Service{
			local(service("a", "b", "10.0.0.1")), local(service("b", "b", "10.0.0.1"))},
			eps:    map[string][]string{"a": {"n1"}, "b": {"n2"}},
			reason: "the Services sharing it have no eligible node in common"},
		{name: "disjoint local, other order", svcs: []*v1.Service{
			local(service("b", "b", "10.0.0.1")), local(service("a", "b", "10.0.0.1"))},
			eps:    map[string][]string{"a": {"n1", "n3"}, "b": {"n2"}},
			reason: "the Services sharing it have no eligible node in common"},
		{name: "first has no node", svcs: []*v1.Service{
			service("b", "b", "10.0.0.1"), local(service("a", "b", "10.0.0.1"))},
			reason: "no node announces it (n1" + noEP + "; n2" + noEP + "; n3" + noEP + ")"},
		{name: "second has no node", svcs: []*v1.Service{
			service("a", "b", "10.0.0.1"), local(service("b", "b", "10.0.0.1"))},
			reason: "no node announces it (n1" + noEP + "; n2" + noEP + "; n3" + noEP + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := world([]string{"n1", "n2", "n3"}, []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, tc.svcs...)
			for s, nodes := range tc.eps {
				var eps []ep
				for _, n := range nodes {
					eps = append(eps, ep{n, true, true})
				}
				in.slices[key(s)] = []*discoveryv1.EndpointSlice{endpointSlice(s, eps...)}
			}
			a := onlyAdv(t, bgpPlan(in, twoPeers()), "10.0.0.1")
			if !slices.Equal(a.nodes, tc.want) || a.reason != tc.reason {
				t.Errorf("nodes %v reason %q, want %v %q", a.nodes, a.reason, tc.want, tc.reason)
			}
			wantPs := everyNode(ab, tc.want...)
			if !reflect.DeepEqual(a.peers, wantPs) {
				t.Errorf("peers = %v, want %v (only the nodes that announce)", a.peers, wantPs)
			}
			if !slices.Equal(a.services, []types.NamespacedName{key("a"), key("b")}) {
				t.Errorf("services = %v, want sorted [a b]", a.services)
			}
		})
	}
}

func TestAggregate(t *testing.T) {
	pool := func(adv v1alpha1.BGPAdvertisement, addrs ...string) *v1alpha1.IPPool {
		return bgpPoolWith("p", func(b *v1alpha1.BGPAdvertisement) { *b = adv }, addrs...)
	}
	wide := []string{"10.0.0.0/8", "fd00::/8"}
	for _, tc := range []struct {
		addr string
		pool *v1alpha1.IPPool
		want string // "" when refused
	}{
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{}, wide...), "10.1.2.3/32"},
		{"fd00::1:2:3", pool(v1alpha1.BGPAdvertisement{}, wide...), "fd00::1:2:3/128"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, wide...), "10.1.2.0/24"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](32)}, wide...), "10.1.2.3/32"},
		{"fd00:1:2:3:4:5:6:7", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](64)}, wide...), "fd00:1:2:3::/64"},
		{"fd00::1", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](128)}, wide...), "fd00::1/128"},
		// Each family uses only its own length.
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](64)}, wide...), "10.1.2.3/32"},
		{"fd00::1", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, wide...), "fd00::1/128"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24), AggregationLengthV6: ptr[int32](64)}, wide...), "10.1.2.0/24"},
		// Out of range (the CRD forbids it): the address itself.
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](33)}, wide...), "10.1.2.3/32"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](-1)}, wide...), "10.1.2.3/32"},
		{"fd00::1", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](129)}, wide...), "fd00::1/128"},
		// Never more than the pool holds.
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](0)}, wide...), ""},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](16)}, "10.1.2.0/24"), ""},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, "10.1.2.0/24"), "10.1.2.0/24"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, "10.1.2.0-10.1.2.254"), ""},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, "10.1.2.0-10.1.2.255"), "10.1.2.0/24"},
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](30)}, "10.1.2.2-10.1.2.9"), ""},
		{"10.1.2.5", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](30)}, "10.1.2.2-10.1.2.9"), "10.1.2.4/30"},
		// Entries together may hold the aggregate.
		{"10.1.2.200", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, "10.1.2.0/25", "10.1.2.128-10.1.2.255"), "10.1.2.0/24"},
		// An entry of the other family holds nothing of this one.
		{"10.1.2.3", pool(v1alpha1.BGPAdvertisement{AggregationLength: ptr[int32](24)}, "10.1.2.3/32", "fd00::/8"), ""},
		{"fd00::1", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](120)}, "fd00::/124"), ""},
		{"fd00::1", pool(v1alpha1.BGPAdvertisement{AggregationLengthV6: ptr[int32](120)}, "fd00::-fd00::ff"), "fd00::/120"},
	} {
		got, why := aggregate(netip.MustParseAddr(tc.addr), tc.pool)
		if tc.want == "" {
			if got.IsValid() || why == "" {
				t.Errorf("aggregate(%s, %v %+v) = %s, %q; want it refused", tc.addr, tc.pool.Spec.Addresses, *tc.pool.Spec.BGP, got, why)
			}
			continue
		}
		if got != netip.MustParsePrefix(tc.want) || why != "" {
			t.Errorf("aggregate(%s, %v %+v) = %s, %q; want %s", tc.addr, tc.pool.Spec.Addresses, *tc.pool.Spec.BGP, got, why, tc.want)
		}
	}
}

// An aggregate wider than the pool is not announced, and the Service's
// Announced condition names the pool, the length and what the pool holds.
func TestBGPPlan_AggregateWiderThanPoolIsNotAnnounced(t *testing.T) {
	pool := bgpPoolWith("small", func(b *v1alpha1.BGPAdvertisement) { b.AggregationLength = ptr[int32](16) }, "10.1.2.0/24")
	in := world([]string{"n1"}, []*v1alpha1.IPPool{pool}, service("web", "small", "10.1.2.3"))
	a := onlyAdv(t, bgpPlan(in, twoPeers()), "10.1.2.3")
	if len(a.nodes) != 0 || len(a.peers) != 0 {
		t.Fatalf("nodes %v, peers %v: want none", a.nodes, a.peers)
	}
	msg := a.message()
	for _, want := range []string{"10.1.2.3", "IPPool small", "aggregationLength 16", "10.1.0.0/16", "10.1.2.0/24"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestBGPPlanAttributes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		edit        func(b *v1alpha1.BGPAdvertisement)
		prefixes    map[string]string // address -> prefix
		communities []string
		localPref   *uint32
	}{
		{name: "defaults", edit: func(*v1alpha1.BGPAdvertisement) {},
			prefixes: map[string]string{"10.0.0.1": "10.0.0.1/32", "fd00::1": "fd00::1/128"}, communities: []string{}},
		{name: "aggregated", edit: func(b *v1alpha1.BGPAdvertisement) {
			b.AggregationLength, b.AggregationLengthV6 = ptr[int32](24), ptr[int32](112)
		}, prefixes: map[string]string{"10.0.0.1": "10.0.0.0/24", "fd00::1": "fd00::/112"}, communities: []string{}},
		{name: "communities and localPref", edit: func(b *v1alpha1.BGPAdvertisement) {
			b.Communities = []v1alpha1.Community{"65000:100", "65000:1:2", "no-export"}
			b.LocalPref = ptr[uint32](200)
		}, prefixes: map[string]string{"10.0.0.1": "10.0.0.1/32", "fd00::1": "fd00::1/128"},
			communities: []string{"65000:100", "65000:1:2", "no-export"}, localPref: ptr[uint32](200)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := bgpPoolWith("b", tc.edit, "10.0.0.0/24", "fd00::/112")
			in := world([]string{"n1"}, []*v1alpha1.IPPool{p}, service("s", "b", "10.0.0.1", "fd00::1"))
			plan := bgpPlan(in, twoPeers())
			if len(plan) != len(tc.prefixes) {
				t.Fatalf("plan = %v, want %d advertisements", plan, len(tc.prefixes))
			}
			for addr, prefix := range tc.prefixes {
				a := plan[netip.MustParseAddr(addr)]
				if a == nil {
					t.Fatalf("no advertisement of %s", addr)
				}
				if a.addr != netip.MustParseAddr(addr) || a.prefix != netip.MustParsePrefix(prefix) {
					t.Errorf("%s: addr %s prefix %s, want %s", addr, a.addr, a.prefix, prefix)
				}
				if !slices.Equal(a.communities, tc.communities) {
					t.Errorf("%s: communities = %q, want %q", addr, a.communities, tc.communities)
				}
				if !reflect.DeepEqual(a.localPref, tc.localPref) {
					t.Errorf("%s: localPref = %v, want %v", addr, a.localPref, tc.localPref)
				}
				if !slices.Equal(a.nodes, []string{"n1"}) {
					t.Errorf("%s: nodes = %v, want [n1]", addr, a.nodes)
				}
			}
		})
	}
}

func TestBGPPlanPools(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools []*v1alpha1.IPPool
		svc   *v1.Service
		want  map[string]string // address -> pool of its advertisement
	}{
		{name: "l2-only pool", pools: []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24")},
			svc: service("s", "p", "10.0.0.1")},
		{name: "bare pool", pools: []*v1alpha1.IPPool{pool("bare", "10.0.0.0/24")}, svc: service("s", "bare", "10.0.0.1")},
		{name: "in no pool", pools: []*v1alpha1.IPPool{bgpPool("b", "10.1.0.0/24")}, svc: service("s", "", "10.0.0.1")},
		{name: "in no pool, the pool named gone", pools: []*v1alpha1.IPPool{bgpPool("b", "10.1.0.0/24")}, svc: service("s", "x", "10.0.0.1")},
		{name: "left the pool named", pools: []*v1alpha1.IPPool{bgpPool("b", "10.1.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			want: map[string]string{"10.0.0.1": "b"}},
		{name: "no ingress", pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b")},
		{name: "bgp pool", pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			want: map[string]string{"10.0.0.1": "b"}},
		{name: "l2 and bgp pool", pools: []*v1alpha1.IPPool{bothPool("both", "10.0.0.0/24")}, svc: service("s", "both", "10.0.0.1"),
			want: map[string]string{"10.0.0.1": "both"}},
		{name: "dual stack, one family by BGP", svc: service("s", "", "10.0.0.1", "fd00::1"),
			pools: []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24"), bgpPool("b6", "fd00::/112")},
			want:  map[string]string{"fd00::1": "b6"}},
		{name: "named l2 pool wins over a bgp pool", svc: service("s", "p", "10.0.0.1"),
			pools: []*v1alpha1.IPPool{bgpPool("a", "10.0.0.0/24"), l2Pool("p", nil, nil, "10.0.0.0/24")}},
		{name: "named bgp pool wins over an l2 pool", svc: service("s", "z", "10.0.0.1"),
			pools: []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24"), bgpPool("z", "10.0.0.0/24")},
			want:  map[string]string{"10.0.0.1": "z"}},
		{name: "IPv4-mapped address", pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")},
			svc: service("s", "b", "::ffff:10.0.0.1"), want: map[string]string{"10.0.0.1": "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := bgpPlan(world([]string{"n1"}, tc.pools, tc.svc), twoPeers())
			if len(plan) != len(tc.want) {
				t.Fatalf("plan = %v, want %d advertisements", plan, len(tc.want))
			}
			for addr, pool := range tc.want {
				a := plan[netip.MustParseAddr(addr)]
				if a == nil || a.pool != pool || !slices.Equal(a.nodes, []string{"n1"}) {
					t.Errorf("%s: %+v, want pool %s from n1", addr, a, pool)
				}
			}
		})
	}
}

func TestBGPPlanIgnoresInputOrder(t *testing.T) {
	build := func(r *rand.Rand) (inputs, []*v1alpha1.BGPPeer) {
		svcs := []*v1.Service{
			service("a", "b", "10.0.0.1", "fd00::1"), service("b", "", "10.0.0.2"),
			local(service("c", "e", "10.1.0.3")), service("d", "b", "10.0.0.1"), service("e", "", "10.1.0.5"),
			local(service("f", "b", "10.0.0.6")), service("g", "l", "10.2.0.1"),
		}
		pools := []*v1alpha1.IPPool{
			bgpPoolWith("b", func(b *v1alpha1.BGPAdvertisement) {
				b.AggregationLength, b.Communities, b.LocalPref = ptr[int32](24), []v1alpha1.Community{"65000:1"}, ptr[uint32](50)
			}, "10.0.0.0/24", "fd00::/120"),
			bgpSelectors("e", map[string]string{"edge": "yes"}, map[string]string{"tier": "edge"}, "10.1.0.0/24"),
			l2Pool("l", nil, nil, "10.2.0.0/24"),
		}
		peers := []*v1alpha1.BGPPeer{
			bgpPeer("peerA", map[string]string{"tier": "edge"}, nil), bgpPeer("peerB", nil, nil),
			bgpPeer("peerC", map[string]string{"tier": "edge"}, map[string]string{"rack": "1"}),
			bgpPeer("peerD", nil, map[string]string{"rack": "2"}),
		}
		names := []string{"n1", "n2", "n3", "n4"}
		r.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		r.Shuffle(len(pools), func(i, j int) { pools[i], pools[j] = pools[j], pools[i] })
		r.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		in := world(names, pools, svcs...)
		setLabels(&in, "n1", map[string]string{"rack": "1", "edge": "yes"})
		setLabels(&in, "n2", map[string]string{"rack": "2", "edge": "yes"})
		setLabels(&in, "n3", map[string]string{"edge": "yes"})
		in.slices[key("c")] = []*discoveryv1.EndpointSlice{endpointSlice("c", ep{"n2", true, true}, ep{"n3", true, true})}
		in.slices[key("f")] = []*discoveryv1.EndpointSlice{endpointSlice("f", ep{"n4", false, false})}
		return in, peers
	}
	r := rand.New(rand.NewPCG(3, 4))
	base := bgpPlan(build(r))
	if len(base) != 6 {
		t.Fatalf("plan has %d addresses, want 6: %v", len(base), base)
	}
	// Spot-check the base so that equal-but-wrong plans do not pass.
	if a := base[netip.MustParseAddr("10.0.0.1")]; a == nil || a.prefix != netip.MustParsePrefix("10.0.0.0/24") ||
		!slices.Equal(a.nodes, []string{"n1", "n2", "n3", "n4"}) || !slices.Equal(a.services, []types.NamespacedName{key("a"), key("d")}) ||
		!slices.Equal(a.peers["n1"], []string{"peerA", "peerB", "peerC"}) || !slices.Equal(a.peers["n2"], []string{"peerA", "peerB", "peerD"}) {
		t.Errorf("10.0.0.1: %+v", a)
	}
	if a := base[netip.MustParseAddr("10.1.0.3")]; a == nil || !slices.Equal(a.nodes, []string{"n2", "n3"}) ||
		!reflect.DeepEqual(a.peers, map[string][]string{"n2": {"peerA"}, "n3": {"peerA"}}) {
		t.Errorf("10.1.0.3: %+v", a)
	}
	if a := base[netip.MustParseAddr("10.0.0.6")]; a == nil || len(a.nodes) != 0 || !strings.HasPrefix(a.reason, "no node announces it (n1: ") {
		t.Errorf("10.0.0.6: %+v", a)
	}
	for range 50 {
		plan := bgpPlan(build(r))
		if !reflect.DeepEqual(plan, base) {
			for addr, want := range base {
				if got := plan[addr]; !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: got %+v, want %+v", addr, got, want)
				}
			}
			t.Fatalf("plan = %v, want %v", plan, base)
		}
	}
}

func TestBGPPlanKeepsInputs(t *testing.T) {
	pools := []*v1alpha1.IPPool{bgpPool("z", "10.1.0.0/24"), bgpPool("a", "10.0.0.0/24")}
	svcs := []*v1.Service{service("z", "", "10.1.0.1"), service("a", "", "10.0.0.1")}
	in := world([]string{"n1"}, pools, svcs...)
	peers := []*v1alpha1.BGPPeer{bgpPeer("z", nil, nil), bgpPeer("a", nil, nil)}
	bgpPlan(in, peers)
	if in.pools[0].Name != "z" || in.services[0].Name != "z" || peers[0].Name != "z" {
		t.Errorf("bgpPlan reordered its inputs: pools %s.., services %s.., peers %s..",
			in.pools[0].Name, in.services[0].Name, peers[0].Name)
	}
}

func TestAdvertisementMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    advertisement
		want string
	}{
		{name: "every node", a: advertisement{
			addr: netip.MustParseAddr("10.0.0.1"), prefix: netip.MustParsePrefix("10.0.0.1/32"),
			nodes: []string{"n1", "n2", "n3"},
			peers: map[string][]string{"n1": {"peerA"}, "n2": {"peerA", "peerB"}, "n3": {"peerB"}},
		}, want: "10.0.0.1/32 by BGP from n1,n2,n3 to peerA,peerB"},
		{name: "aggregated v6", a: advertisement{
			addr: netip.MustParseAddr("fd00::1"), prefix: netip.MustParsePrefix("fd00::/64"),
			nodes: []string{"n2"}, peers: map[string][]string{"n2": {"peerC", "peerA"}},
		}, want: "fd00::/64 by BGP from n2 to peerA,peerC"},
		{name: "no node", a: advertisement{
			addr: netip.MustParseAddr("10.0.0.1"), prefix: netip.MustParsePrefix("10.0.0.0/24"),
			peers: map[string][]string{}, reason: "no node announces it (n1: NetworkUnavailable)",
		}, want: "10.0.0.1: no node announces it (n1: NetworkUnavailable)"},
	} {
		if got := tc.a.message(); got != tc.want {
			t.Errorf("%s: message = %q\nwant          %q", tc.name, got, tc.want)
		}
	}

	// From the plan.
	in := world([]string{"n3", "n1", "n2"}, []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, service("s", "b", "10.0.0.1"))
	a := onlyAdv(t, bgpPlan(in, []*v1alpha1.BGPPeer{bgpPeer("peerB", nil, nil), bgpPeer("peerA", nil, nil)}), "10.0.0.1")
	if got, want := a.message(), "10.0.0.1/32 by BGP from n1,n2,n3 to peerA,peerB"; got != want {
		t.Errorf("plan message = %q, want %q", got, want)
	}
	a = onlyAdv(t, bgpPlan(in, nil), "10.0.0.1")
	const noPeer = ": no BGPPeer selects it and is selected by the pool"
	if got, want := a.message(), "10.0.0.1: no node announces it (n1"+noPeer+"; n2"+noPeer+"; n3"+noPeer+")"; got != want {
		t.Errorf("plan message = %q\nwant               %q", got, want)
	}
}

func TestAnnouncedConditionWithBGP(t *testing.T) {
	const noPeer = ": no BGPPeer selects it and is selected by the pool"
	for _, tc := range []struct {
		name         string
		nodes        []string
		pools        []*v1alpha1.IPPool
		peers        []*v1alpha1.BGPPeer // default: twoPeers
		up           sessions            // Established sessions; default: every node's with every peer
		svc          *v1.Service
		edit         func(in *inputs)
		status       metav1.ConditionStatus // "" for nil
		reason, msg  string
		notAnnounced string // expected from l2Plan
	}{
		{name: "bgp announced", nodes: []string{"n1", "n2", "n3"},
			pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.1/32 by BGP from n1,n2,n3 to peerA,peerB"},
		{name: "bgp, one node's session with one peer Established", nodes: []string{"n1", "n2", "n3"},
			pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			up:     sessions{"peerB": {"n2": true}},
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.1/32 by BGP from n1,n2,n3 to peerA,peerB"},
		{name: "bgp, no session Established", nodes: []string{"n1", "n2"},
			pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			up:     sessions{},
			status: metav1.ConditionFalse, reason: ReasonNoEstablishedSession,
			msg: "10.0.0.1/32 not advertised: no BGP session from n1,n2 to peerA,peerB is Established (BGPPeer status.nodes has each session's state)"},
		{name: "bgp, Established sessions only of nodes and peers that do not carry it", nodes: []string{"n1", "n2"},
			pools: []*v1alpha1.IPPool{bgpSelectors("b", map[string]string{"edge": "yes"}, map[string]string{"tier": "edge"}, "10.0.0.0/24")},
			peers: []*v1alpha1.BGPPeer{bgpPeer("edge", map[string]string{"tier": "edge"}, nil), bgpPeer("core", nil, nil)},
			edit:  func(in *inputs) { setLabels(in, "n1", map[string]string{"edge": "yes"}) },
			svc:   service("s", "b", "10.0.0.1"),
			// n2 is Established with edge but does not advertise; n1
			// does, and is Established with core only, which the pool
			// does not select.
			up:     sessions{"edge": {"n2": true}, "core": {"n1": true, "n2": true}},
			status: metav1.ConditionFalse, reason: ReasonNoEstablishedSession,
			msg: "10.0.0.1/32 not advertised: no BGP session from n1 to edge is Established (BGPPeer status.nodes has each session's state)"},
		{name: "bgp dual stack, one family's sessions down", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24"), bgpSelectors("b6", nil, map[string]string{"family": "6"}, "fd00::/112")},
			peers:  []*v1alpha1.BGPPeer{bgpPeer("v4", nil, nil), bgpPeer("v6", map[string]string{"family": "6"}, nil)},
			up:     sessions{"v4": {"n1": true}},
			svc:    service("s", "", "10.0.0.1", "fd00::1"),
			status: metav1.ConditionFalse, reason: ReasonNoEstablishedSession,
			msg: "10.0.0.1/32 by BGP from n1 to v4,v6; fd00::1/128 not advertised: no BGP session from n1 to v6 is Established (BGPPeer status.nodes has each session's state)"},
		{name: "bgp without Established session, l2 answers", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bothPool("p", "10.0.0.0/24")}, svc: service("s", "p", "10.0.0.1"),
			up:     sessions{},
			status: metav1.ConditionFalse, reason: ReasonNoEstablishedSession,
			msg: "10.0.0.1/32 not advertised: no BGP session from n1 to peerA,peerB is Established (BGPPeer status.nodes has each session's state); 10.0.0.1 by n1 on eth0 (ARP)"},
		{name: "no eligible node outweighs no session", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24"), bgpSelectors("x", map[string]string{"x": "y"}, nil, "fd00::/112")},
			svc:    service("s", "", "10.0.0.1", "fd00::1"),
			up:     sessions{},
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1/32 not advertised: no BGP session from n1 to peerA,peerB is Established (BGPPeer status.nodes has each session's state); fd00::1: no node announces it (n1: not selected by the pool's bgp.nodeSelector)"},
		{name: "bgp aggregated, dual stack", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpPoolWith("b", func(b *v1alpha1.BGPAdvertisement) {
				b.AggregationLength, b.AggregationLengthV6 = ptr[int32](24), ptr[int32](112)
			}, "10.0.0.0/24", "fd00::/112")},
			svc:    service("s", "b", "10.0.0.1", "fd00::1"),
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.0/24 by BGP from n1 to peerA,peerB; fd00::/112 by BGP from n1 to peerA,peerB"},
		{name: "bgp aggregate wider than the pool", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpPoolWith("b", func(b *v1alpha1.BGPAdvertisement) {
				b.AggregationLength = ptr[int32](16)
			}, "10.0.0.0/24")},
			svc:    service("s", "b", "10.0.0.1"),
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1: not announced by BGP: IPPool b's bgp.aggregationLength 16 would announce 10.0.0.0/16, which covers addresses outside the pool (it holds 10.0.0.0/24)"},
		{name: "bgp without node", nodes: []string{"n1"}, peers: []*v1alpha1.BGPPeer{},
			pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1"),
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1: no node announces it (n1" + noPeer + ")"},
		{name: "bgp, one address without node", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24"), bgpSelectors("x", map[string]string{"x": "y"}, nil, "fd00::/112")},
			svc:    service("s", "", "10.0.0.1", "fd00::1"),
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1/32 by BGP from n1 to peerA,peerB; fd00::1: no node announces it (n1: not selected by the pool's bgp.nodeSelector)"},
		{name: "l2 and bgp", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bothPool("p", "10.0.0.0/24")}, svc: service("s", "p", "10.0.0.1"),
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.1/32 by BGP from n1 to peerA,peerB; 10.0.0.1 by n1 on eth0 (ARP)"},
		{name: "l2 and bgp, l2 without owner", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bothPool("p", "10.0.0.0/24")}, svc: service("s", "p", "10.0.0.1"),
			edit:   func(in *inputs) { delete(in.alive, "n1") },
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1/32 by BGP from n1 to peerA,peerB; 10.0.0.1: no eligible node (n1: no live speaker)"},
		{name: "l2 and bgp, bgp without node", nodes: []string{"n1"}, peers: []*v1alpha1.BGPPeer{},
			pools: []*v1alpha1.IPPool{bothPool("p", "10.0.0.0/24")}, svc: service("s", "p", "10.0.0.1"),
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1: no node announces it (n1" + noPeer + "); 10.0.0.1 by n1 on eth0 (ARP)"},
		{name: "one family each", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24"), bgpPool("b", "fd00::/112")},
			svc:    service("s", "", "10.0.0.1", "fd00::1"),
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.1 by n1 on eth0 (ARP); fd00::1/128 by BGP from n1 to peerA,peerB"},
		{name: "bgp and an address in no pool", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")},
			svc:    service("s", "", "10.0.0.1", "10.9.9.9"),
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced, notAnnounced: "10.9.9.9 is in no IPPool",
			msg: "10.9.9.9 is in no IPPool; 10.0.0.1/32 by BGP from n1 to peerA,peerB"},
		{name: "bgp and an address that left the pool", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpPoolWith("b", func(b *v1alpha1.BGPAdvertisement) {
				b.AggregationLength = ptr[int32](24)
			}, "10.0.0.0/24")},
			svc:    service("s", "b", "10.0.0.1", "10.9.9.9"),
			status: metav1.ConditionTrue, reason: ReasonAddressNotInPool,
			msg: "10.0.0.0/24 by BGP from n1 to peerA,peerB; 10.9.9.9/32 by BGP from n1 to peerA,peerB, " +
				"in no IPPool: announced with the settings of IPPool b, which no longer holds it"},
		{name: "no session outweighs an address that left the pool", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")},
			svc:    service("s", "b", "10.0.0.1", "10.9.9.9"),
			up:     sessions{},
			status: metav1.ConditionFalse, reason: ReasonNoEstablishedSession,
			msg: "10.0.0.1/32 not advertised: no BGP session from n1 to peerA,peerB is Established (BGPPeer status.nodes has each session's state); " +
				"10.9.9.9/32 not advertised: no BGP session from n1 to peerA,peerB is Established (BGPPeer status.nodes has each session's state), " +
				"in no IPPool: announced with the settings of IPPool b, which no longer holds it"},
		{name: "bgp from a pool being deleted", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{deletingPool(bgpPool("b", "10.0.0.0/24"))},
			svc:    service("s", "b", "10.0.0.1"),
			status: metav1.ConditionTrue, reason: ReasonAddressNotInPool,
			msg: "10.0.0.1/32 by BGP from n1 to peerA,peerB, IPPool b, which announces it, is being deleted"},
		{name: "neither l2 nor bgp", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{pool("bare", "10.0.0.0/24")},
			svc:    service("s", "bare", "10.0.0.1"),
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced,
			notAnnounced: "IPPool bare has neither l2 nor bgp: 10.0.0.1 is allocated but not announced",
			msg:          "IPPool bare has neither l2 nor bgp: 10.0.0.1 is allocated but not announced"},
		{name: "no address", nodes: []string{"n1"},
			pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := world(tc.nodes, tc.pools, tc.svc)
			if tc.edit != nil {
				tc.edit(&in)
			}
			peers := tc.peers
			if peers == nil {
				peers = twoPeers()
			}
			up := tc.up
			if up == nil {
				up = allUp(peers, tc.nodes...)
			}
			plan, notAnnounced := l2Plan(in)
			if got := notAnnounced[key("s")]; got != tc.notAnnounced {
				t.Errorf("notAnnounced = %q, want %q", got, tc.notAnnounced)
			}
			c := announcedCondition(cached(tc.svc), plan, bgpPlan(in, peers), up, notAnnounced[key("s")], "")
			if tc.status == "" {
				if c != nil {
					t.Fatalf("condition = %+v, want nil", c)
				}
				return
			}
			if c == nil {
				t.Fatal("condition = nil")
			}
			if c.Type != v1alpha1.ConditionAnnounced || c.Status != tc.status || c.Reason != tc.reason ||
				c.Message != tc.msg || c.ObservedGeneration != tc.svc.Generation {
				t.Errorf("condition = %+v\nwant %s/%s %q", c, tc.status, tc.reason, tc.msg)
			}
		})
	}
}
