package speaker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// service is a Cluster Service in "default" with addrs in its status; pool
// goes into ironlb.io/allocated-from when not empty.
func service(name, pool string, addrs ...string) *v1.Service {
	s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Generation: 3}}
	if pool != "" {
		s.Annotations = map[string]string{v1alpha1.AnnotationAllocatedFrom: pool, v1alpha1.AnnotationAllocatedAddresses: strings.Join(addrs, ",")}
	}
	s.Spec.Type, s.Spec.ExternalTrafficPolicy = v1.ServiceTypeLoadBalancer, v1.ServiceExternalTrafficPolicyCluster
	for _, a := range addrs {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: a})
	}
	return s
}

// cached is svc as a speaker keeps it (slimService); nil for nil.
func cached(svc *v1.Service) *lbService {
	if svc == nil {
		return nil
	}
	return newLBService(classifier, svc)
}

func local(s *v1.Service) *v1.Service {
	s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	return s
}

func key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: "default", Name: name}
}

type ep struct {
	node           string
	ready, serving bool
}

// endpointSlice is one slice of Service svc with the endpoints eps.
func endpointSlice(svc string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{
		Namespace: "default", Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc},
	}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{"192.168.0.1"},
			NodeName:   &e.node,
			Conditions: discoveryv1.EndpointConditions{Ready: &e.ready, Serving: &e.serving},
		})
	}
	return s
}

// l2Pool announces addrs by L2 on ifaces (default interface when empty) from
// nodes matching sel (all when nil).
func l2Pool(name string, ifaces []string, sel map[string]string, addrs ...string) *v1alpha1.IPPool {
	p := pool(name, addrs...)
	p.Spec.L2 = &v1alpha1.L2Advertisement{Interfaces: ifaces}
	if sel != nil {
		p.Spec.L2.NodeSelector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return p
}

func bgpPool(name string, addrs ...string) *v1alpha1.IPPool {
	p := pool(name, addrs...)
	p.Spec.BGP = &v1alpha1.BGPAdvertisement{}
	return p
}

// pool announces in no way.
func pool(name string, addrs ...string) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.AddressRange(a))
	}
	return p
}

func node(name string, labels map[string]string, netUnavailable bool) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if netUnavailable {
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionTrue}}
	}
	return n
}

// heartbeat is the info of a speaker whose default interface is eth0 and
// whose interfaces up are up.
func heartbeat(up ...string) map[string]string {
	info := map[string]string{infoDefaultIf: "eth0"}
	for _, i := range up {
		info[infoIfPrefix+i] = ifUp
	}
	return info
}

// world has plain nodes, all alive with eth0 up, the pools, and the Services.
func world(nodes []string, pools []*v1alpha1.IPPool, svcs ...*v1.Service) inputs {
	in := inputs{
		pools:  pools,
		slices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		nodes:  map[string]*v1.Node{}, alive: map[string]map[string]string{},
	}
	for _, svc := range svcs {
		in.services = append(in.services, cached(svc))
	}
	for _, n := range nodes {
		in.nodes[n] = node(n, nil, false)
		in.alive[n] = heartbeat("eth0")
	}
	return in
}

var defaultPools = []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/16", "fd00::/112")}

func only(t *testing.T, plan map[netip.Addr]*announcement, addr string) *announcement {
	t.Helper()
	a := plan[netip.MustParseAddr(addr)]
	if a == nil || len(plan) != 1 {
		t.Fatalf("plan = %v, want one announcement of %s", plan, addr)
	}
	return a
}

func TestRankIgnoresMapOrder(t *testing.T) {
	want := map[string]string{}
	for i := range 50 {
		k := fmt.Sprintf("10.0.0.%d", i)
		want[k] = rank(k, map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true})
	}
	for range 200 {
		nodes := map[string]bool{}
		for _, n := range rand.Perm(5) {
			nodes[string(rune('a'+n))] = true
		}
		for k, w := range want {
			if got := rank(k, nodes); got != w {
				t.Fatalf("rank(%s) = %s, then %s", k, w, got)
			}
		}
	}
	if got := rank("10.0.0.1", nil); got != "" {
		t.Errorf("rank over no node = %q, want \"\"", got)
	}
}

func TestPlanIgnoresInputOrder(t *testing.T) {
	build := func(r *rand.Rand) inputs {
		svcs := []*v1.Service{
			service("a", "p", "10.0.0.1", "fd00::1"), service("b", "", "10.0.0.2"),
			local(service("c", "q", "10.1.0.3")), service("d", "p", "10.0.0.4"), service("e", "", "10.1.0.5"),
		}
		pools := []*v1alpha1.IPPool{
			l2Pool("p", nil, nil, "10.0.0.0/24", "fd00::/120"), l2Pool("q", []string{"eth1", "eth2"}, nil, "10.1.0.0/24"),
		}
		names := []string{"n1", "n2", "n3", "n4"}
		r.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		r.Shuffle(len(pools), func(i, j int) { pools[i], pools[j] = pools[j], pools[i] })
		r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		in := world(names, pools, svcs...)
		in.alive["n2"] = heartbeat("eth0", "eth2")
		in.alive["n3"] = heartbeat("eth0", "eth1", "eth2")
		in.slices[key("c")] = []*discoveryv1.EndpointSlice{endpointSlice("c", ep{"n2", true, true}, ep{"n3", true, true})}
		return in
	}
	r := rand.New(rand.NewPCG(1, 2))
	base, _ := l2Plan(build(r))
	if len(base) != 6 {
		t.Fatalf("plan has %d addresses, want 6", len(base))
	}
	for range 50 {
		plan, _ := l2Plan(build(r))
		for addr, want := range base {
			got := plan[addr]
			if got == nil || got.owner != want.owner || got.pool != want.pool || !slices.Equal(got.interfaces, want.interfaces) {
				t.Fatalf("%s: got %+v, want %+v", addr, got, want)
			}
		}
	}
}

func TestPlanSpreadsAndMovesLittle(t *testing.T) {
	var addrs []string
	a := netip.MustParseAddr("10.0.0.1")
	for range 3000 {
		addrs = append(addrs, a.String())
		a = a.Next()
	}
	svc := service("many", "p", addrs...)
	in := world([]string{"n1", "n2", "n3"}, defaultPools, svc)
	base, _ := l2Plan(in)
	count := map[string]int{}
	for _, an := range base {
		count[an.owner]++
	}
	if len(base) != 3000 {
		t.Fatalf("plan has %d addresses, want 3000", len(base))
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if c := count[n]; c < 750 || c > 1260 {
			t.Errorf("%s owns %d of 3000 addresses, want 25%%..42%%", n, c)
		}
	}

	delete(in.nodes, "n3")
	delete(in.alive, "n3")
	without, _ := l2Plan(in)
	for addr, an := range base {
		got := without[addr].owner
		if an.owner != "n3" && got != an.owner || an.owner == "n3" && got != "n1" && got != "n2" {
			t.Fatalf("without n3, %s moved from %s to %q", addr, an.owner, got)
		}
	}

	back, _ := l2Plan(world([]string{"n1", "n2", "n3"}, defaultPools, svc))
	for addr, an := range base {
		if got := back[addr].owner; got != an.owner {
			t.Fatalf("with n3 back, %s is %s's, was %s's", addr, got, an.owner)
		}
	}
}

func TestEligibility(t *testing.T) {
	const noEP = ": no ready local endpoint (externalTrafficPolicy: Local)"
	for _, tc := range []struct {
		name    string
		nodes   []string
		pools   []*v1alpha1.IPPool
		svc     *v1.Service
		edit    func(in *inputs)
		owner   string
		reason  string // when owner is ""
		missing string // a node expected in missing
	}{
		{name: "selector picks n2", nodes: []string{"n1", "n2"},
			pools: []*v1alpha1.IPPool{l2Pool("p", nil, map[string]string{"lb": "yes"}, "10.0.0.0/24")},
			edit:  func(in *inputs) { in.nodes["n2"].Labels = map[string]string{"lb": "yes"} }, owner: "n2"},
		{name: "not selected", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{l2Pool("p", nil, map[string]string{"lb": "yes"}, "10.0.0.0/24")},
			reason: "no eligible node (n1: not selected by the pool's l2.nodeSelector)"},
		{name: "excluded", nodes: []string{"n1"},
			edit:   func(in *inputs) { in.nodes["n1"].Labels = map[string]string{LabelExcludeFromLB: ""} },
			reason: "no eligible node (n1: labelled " + LabelExcludeFromLB + ")"},
		{name: "network unavailable", nodes: []string{"n1"},
			edit:   func(in *inputs) { in.nodes["n1"] = node("n1", nil, true) },
			reason: "no eligible node (n1: NetworkUnavailable)"},
		{name: "no live speaker", nodes: []string{"n1"},
			edit:   func(in *inputs) { delete(in.alive, "n1") },
			reason: "no eligible node (n1: no live speaker)"},
		{name: "default interface down", nodes: []string{"n1"},
			edit:   func(in *inputs) { in.alive["n1"] = heartbeat() },
			reason: "no eligible node (n1: interface eth0 (the one with the node's InternalIP) is down)", missing: "n1"},
		{name: "no default interface", nodes: []string{"n1"},
			edit:   func(in *inputs) { in.alive["n1"] = map[string]string{} },
			reason: "no eligible node (n1: no interface holds the node's InternalIP)", missing: "n1"},
		{name: "pool interface missing", nodes: []string{"n1"},
			pools:  []*v1alpha1.IPPool{l2Pool("p", []string{"eth9"}, nil, "10.0.0.0/24")},
			reason: "no eligible node (n1: none of the pool's interfaces [eth9] exists and is up)", missing: "n1"},
		{name: "no nodes", reason: "no eligible node (the cluster has no nodes)"},
		{name: "invalid selector", nodes: []string{"n1"},
			edit: func(in *inputs) {
				in.pools[0].Spec.L2.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}}
			},
			reason: "IPPool p has an invalid l2.nodeSelector"},
		{name: "local on n2", nodes: []string{"n1", "n2", "n3"}, svc: local(service("s", "p", "10.0.0.1")),
			edit: func(in *inputs) {
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{endpointSlice("s", ep{"n2", true, true})}
			}, owner: "n2"},
		{name: "local serving not ready counts", nodes: []string{"n1", "n2", "n3"}, svc: local(service("s", "p", "10.0.0.1")),
			edit: func(in *inputs) {
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{endpointSlice("s", ep{"n3", false, true})}
			}, owner: "n3"},
		{name: "local neither ready nor serving", nodes: []string{"n1", "n2"}, svc: local(service("s", "p", "10.0.0.1")),
			edit: func(in *inputs) {
				in.slices[key("s")] = []*discoveryv1.EndpointSlice{endpointSlice("s", ep{"n1", false, false})}
			},
			reason: "no eligible node (n1" + noEP + "; n2" + noEP + ")"},
		{name: "reasons of every node, sorted", nodes: []string{"n2", "n1"},
			edit:   func(in *inputs) { in.nodes["n1"] = node("n1", nil, true); delete(in.alive, "n2") },
			reason: "no eligible node (n1: NetworkUnavailable; n2: no live speaker)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := tc.pools
			if pools == nil {
				pools = []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24")}
			}
			svc := tc.svc
			if svc == nil {
				svc = service("s", "p", "10.0.0.1")
			}
			in := world(tc.nodes, pools, svc)
			if tc.edit != nil {
				tc.edit(&in)
			}
			plan, notAnnounced := l2Plan(in)
			a := only(t, plan, "10.0.0.1")
			if len(notAnnounced) != 0 {
				t.Errorf("notAnnounced = %v", notAnnounced)
			}
			if a.owner != tc.owner {
				t.Fatalf("owner = %q (reason %q), want %q", a.owner, a.reason, tc.owner)
			}
			if tc.owner == "" && !strings.HasPrefix(a.reason, tc.reason) {
				t.Errorf("reason = %q, want %q", a.reason, tc.reason)
			}
			if tc.owner != "" && a.reason != "" {
				t.Errorf("owned, yet reason = %q", a.reason)
			}
			if tc.missing != "" && !strings.Contains(a.missing[tc.missing], tc.missing+": ") {
				t.Errorf("missing = %v, want an entry for %s", a.missing, tc.missing)
			}
			if tc.missing == "" && len(a.missing) != 0 {
				t.Errorf("missing = %v, want none", a.missing)
			}
			if tc.owner == "" {
				c := announcedCondition(cached(svc), plan, nil, nil, "", "")
				if c == nil || c.Reason != ReasonNoEligibleNode || c.Message != "10.0.0.1: "+a.reason {
					t.Errorf("condition = %+v", c)
				}
			}
		})
	}
}

func TestAnsweringInterfaces(t *testing.T) {
	in := world([]string{"n1"}, []*v1alpha1.IPPool{l2Pool("p", []string{"eth1", "eth2"}, nil, "10.0.0.0/24")},
		service("s", "p", "10.0.0.1"))
	in.alive["n1"] = heartbeat("eth0", "eth2")
	plan, _ := l2Plan(in)
	if a := only(t, plan, "10.0.0.1"); a.owner != "n1" || !slices.Equal(a.interfaces, []string{"eth2"}) {
		t.Errorf("pool interfaces: owner %q on %v, want n1 on [eth2]", a.owner, a.interfaces)
	}

	in = world([]string{"n1"}, defaultPools, service("s", "p", "fd00::1"))
	in.alive["n1"] = map[string]string{infoDefaultIf: "ens3", infoIfPrefix + "ens3": ifUp, infoIfPrefix + "eth0": ifUp}
	plan, _ = l2Plan(in)
	if a := only(t, plan, "fd00::1"); a.owner != "n1" || !slices.Equal(a.interfaces, []string{"ens3"}) {
		t.Errorf("default interface: owner %q on %v, want n1 on [ens3]", a.owner, a.interfaces)
	}
}

func TestSharing(t *testing.T) {
	const noEP = ": no ready local endpoint (externalTrafficPolicy: Local)"
	for _, tc := range []struct {
		name   string
		svcs   []*v1.Service
		eps    map[string]string // Service -> node with its endpoint
		owner  string
		reason string
	}{
		{name: "local and cluster", svcs: []*v1.Service{
			service("b", "p", "10.0.0.1"), local(service("a", "p", "10.0.0.1"))},
			eps: map[string]string{"a": "n2"}, owner: "n2"},
		{name: "cluster and local", svcs: []*v1.Service{
			local(service("a", "p", "10.0.0.1")), service("b", "p", "10.0.0.1")},
			eps: map[string]string{"a": "n2"}, owner: "n2"},
		// Each Service has a node, but not the same one.
		{name: "disjoint local", svcs: []*v1.Service{
			local(service("a", "p", "10.0.0.1")), local(service("b", "p", "10.0.0.1"))},
			eps:    map[string]string{"a": "n1", "b": "n2"},
			reason: "the Services sharing it have no eligible node in common"},
		{name: "disjoint local, other order", svcs: []*v1.Service{
			local(service("b", "p", "10.0.0.1")), local(service("a", "p", "10.0.0.1"))},
			eps:    map[string]string{"a": "n1", "b": "n2"},
			reason: "the Services sharing it have no eligible node in common"},
		{name: "first has no node", svcs: []*v1.Service{
			local(service("a", "p", "10.0.0.1")), service("b", "p", "10.0.0.1")},
			reason: "no eligible node (n1" + noEP + "; n2" + noEP + "; n3" + noEP + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := world([]string{"n1", "n2", "n3"}, defaultPools, tc.svcs...)
			for s, n := range tc.eps {
				in.slices[key(s)] = []*discoveryv1.EndpointSlice{endpointSlice(s, ep{n, true, true})}
			}
			plan, _ := l2Plan(in)
			a := only(t, plan, "10.0.0.1")
			if a.owner != tc.owner || a.reason != tc.reason {
				t.Errorf("owner %q reason %q, want %q %q", a.owner, a.reason, tc.owner, tc.reason)
			}
			if !slices.Equal(a.services, []types.NamespacedName{key("a"), key("b")}) {
				t.Errorf("services = %v, want sorted [a b]", a.services)
			}
		})
	}
}

func TestPoolLookup(t *testing.T) {
	for _, tc := range []struct {
		name         string
		pools        []*v1alpha1.IPPool
		svc          *v1.Service
		pool         string // of the announcement; "" for none
		notAnnounced string // substring
	}{
		{name: "named pool lacks the address",
			pools: []*v1alpha1.IPPool{l2Pool("other", nil, nil, "10.1.0.0/24"), l2Pool("p", nil, nil, "10.0.0.0/24")},
			svc:   service("s", "other", "10.0.0.1"), pool: "p"},
		{name: "named pool preferred",
			pools: []*v1alpha1.IPPool{l2Pool("first", nil, nil, "10.0.0.0/24"), l2Pool("named", nil, nil, "10.0.0.0-10.0.0.9")},
			svc:   service("s", "named", "10.0.0.1"), pool: "named"},
		{name: "IPv4-mapped address", pools: defaultPools, svc: service("s", "p", "::ffff:10.0.0.1"), pool: "p"},
		{name: "in no pool", pools: defaultPools, svc: service("s", "", "10.9.9.9"),
			notAnnounced: "10.9.9.9 is in no IPPool"},
		{name: "in no pool, and the pool named is gone", pools: defaultPools, svc: service("s", "gone", "10.9.9.9"),
			notAnnounced: "10.9.9.9 is in no IPPool, and IPPool gone it was allocated from does not exist"},
		{name: "neither l2 nor bgp", pools: []*v1alpha1.IPPool{pool("bare", "10.0.0.0/24")}, svc: service("s", "bare", "10.0.0.1"),
			notAnnounced: "IPPool bare has neither l2 nor bgp: 10.0.0.1 is allocated but not announced"},
		{name: "bgp only", pools: []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc: service("s", "b", "10.0.0.1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, notAnnounced := l2Plan(world([]string{"n1"}, tc.pools, tc.svc))
			if tc.pool != "" {
				if a := only(t, plan, "10.0.0.1"); a.pool != tc.pool || a.owner != "n1" {
					t.Errorf("pool %q owner %q, want %q n1", a.pool, a.owner, tc.pool)
				}
			} else if len(plan) != 0 {
				t.Errorf("plan = %v, want empty", plan)
			}
			got := notAnnounced[key("s")]
			if tc.notAnnounced == "" && len(notAnnounced) != 0 || !strings.Contains(got, tc.notAnnounced) {
				t.Errorf("notAnnounced = %v, want %q", notAnnounced, tc.notAnnounced)
			}
		})
	}
}

func ann(addr, owner string, ifaces ...string) *announcement {
	a := &announcement{addr: netip.MustParseAddr(addr), owner: owner, interfaces: ifaces}
	if owner == "" {
		a.reason = "no eligible node (n1: no live speaker)"
	}
	return a
}

func planOf(as ...*announcement) map[netip.Addr]*announcement {
	p := map[netip.Addr]*announcement{}
	for _, a := range as {
		p[a.addr] = a
	}
	return p
}

func TestAnnouncedCondition(t *testing.T) {
	svc := service("s", "p", "10.0.0.1", "fd00::1")
	for _, tc := range []struct {
		name         string
		plan         map[netip.Addr]*announcement
		notAnnounced string
		status       metav1.ConditionStatus // "" for nil
		reason, msg  string
	}{
		{name: "all owned", plan: planOf(ann("10.0.0.1", "n1", "eth0"), ann("fd00::1", "n2", "eth1", "eth2")),
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			msg: "10.0.0.1 by n1 on eth0 (ARP); fd00::1 by n2 on eth1,eth2 (NDP)"},
		{name: "one without owner", plan: planOf(ann("10.0.0.1", "n1", "eth0"), ann("fd00::1", "")),
			status: metav1.ConditionFalse, reason: ReasonNoEligibleNode,
			msg: "10.0.0.1 by n1 on eth0 (ARP); fd00::1: no eligible node (n1: no live speaker)"},
		{name: "one bgp only", plan: planOf(ann("fd00::1", "n2", "eth0")),
			status: metav1.ConditionTrue, reason: ReasonAnnounced, msg: "fd00::1 by n2 on eth0 (NDP)"},
		{name: "not announced", plan: planOf(ann("10.0.0.1", "n1", "eth0")), notAnnounced: "fd00::1 is in no IPPool",
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced,
			msg: "fd00::1 is in no IPPool; 10.0.0.1 by n1 on eth0 (ARP)"},
		{name: "not announced alone", plan: planOf(), notAnnounced: "10.0.0.1 is in no IPPool",
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced, msg: "10.0.0.1 is in no IPPool"},
		{name: "all bgp only", plan: planOf(ann("10.9.9.9", "n1", "eth0"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := announcedCondition(cached(svc), tc.plan, nil, nil, tc.notAnnounced, "")
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
				c.Message != tc.msg || c.ObservedGeneration != svc.Generation {
				t.Errorf("condition = %+v, want %s/%s %q", c, tc.status, tc.reason, tc.msg)
			}
		})
	}
}

func TestAnnouncedConditionFromPlan(t *testing.T) {
	svc := service("s", "p", "10.0.0.1", "fd00::1")
	plan, notAnnounced := l2Plan(world([]string{"n1"}, defaultPools, svc))
	c := announcedCondition(cached(svc), plan, nil, nil, notAnnounced[key("s")], "")
	want := "10.0.0.1 by n1 on eth0 (ARP); fd00::1 by n1 on eth0 (NDP)"
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonAnnounced || c.Message != want {
		t.Errorf("condition = %+v, want True/Announced %q", c, want)
	}

	svc = service("s", "b", "10.0.0.1")
	plan, notAnnounced = l2Plan(world([]string{"n1"}, []*v1alpha1.IPPool{bgpPool("b", "10.0.0.0/24")}, svc))
	if c := announcedCondition(cached(svc), plan, nil, nil, notAnnounced[key("s")], ""); c != nil {
		t.Errorf("bgp-only condition = %+v, want nil", c)
	}
}

func TestWriter(t *testing.T) {
	svc := service("s", "p", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	alive := map[string]bool{"n1": true, "n2": true, "n3": true}
	if got := writer(cached(svc), planOf(ann("10.0.0.1", ""), ann("10.0.0.2", "n2", "eth0"), ann("10.0.0.3", "n3", "eth0")), alive); got != "n2" {
		t.Errorf("writer = %q, want n2, the owner of the first owned address", got)
	}

	noOwner := planOf(ann("10.0.0.1", ""), ann("10.0.0.2", ""))
	for i := range 20 {
		s := service(fmt.Sprintf("s%d", i), "p", "10.0.0.1", "10.0.0.2")
		want := writer(cached(s), noOwner, alive)
		if _, ok := alive[want]; !ok {
			t.Fatalf("writer of %s = %q, not alive", s.Name, want)
		}
		for range 20 {
			shuffled := map[string]bool{}
			for _, j := range rand.Perm(3) {
				shuffled[fmt.Sprintf("n%d", j+1)] = true
			}
			if got := writer(cached(s), noOwner, shuffled); got != want {
				t.Fatalf("writer of %s = %q, then %q", s.Name, want, got)
			}
		}
	}
	if got := writer(cached(svc), noOwner, map[string]bool{"n3": true}); got != "n3" {
		t.Errorf("writer with only n3 alive = %q, want n3", got)
	}
	if got := writer(cached(svc), noOwner, nil); got != "" {
		t.Errorf("writer with no live speaker = %q, want \"\"", got)
	}
}
