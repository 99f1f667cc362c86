package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// scale is a cluster of n nodes and services LoadBalancer Services, half
// of them from an L2 pool and half from a BGP pool, one in ten with
// externalTrafficPolicy Local and endpoints on three nodes.
func scale(nodes, services int) (inputs, []*v1alpha1.BGPPeer) {
	in, svcs, peers := scaleServices(nodes, services)
	for _, svc := range svcs {
		in.services = append(in.services, cached(svc))
	}
	return in, peers
}

// scaleServices is scale's world without its Services, and the Services.
func scaleServices(nodes, services int) (inputs, []*v1.Service, []*v1alpha1.BGPPeer) {
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node-%03d", i)
	}
	in := world(names, []*v1alpha1.IPPool{
		l2Pool("l2", nil, nil, "172.31.0.0/17"),
		bgpPool("bgp", "172.31.128.0/17"),
	})
	in.recorded = map[netip.Addr]string{}
	var svcs []*v1.Service
	next := map[string]netip.Addr{"l2": netip.MustParseAddr("172.31.0.1"), "bgp": netip.MustParseAddr("172.31.128.1")}
	for i := range services {
		pool := "l2"
		if i%2 == 1 {
			pool = "bgp"
		}
		addr := next[pool]
		next[pool] = addr.Next()
		svc := service(fmt.Sprintf("svc-%05d", i), pool, addr.String())
		svc.ResourceVersion = fmt.Sprint(i + 1)
		if i%10 == 0 {
			local(svc)
			es := endpointSlice(svc.Name, ep{node: names[i%nodes], ready: true}, ep{node: names[(i+1)%nodes], ready: true}, ep{node: names[(i+2)%nodes], ready: true})
			es.ResourceVersion = svc.ResourceVersion
			in.slices[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] = []*discoveryv1.EndpointSlice{es}
		}
		svcs = append(svcs, svc)
	}
	return in, svcs, []*v1alpha1.BGPPeer{bgpPeer("router", nil, nil)}
}

// BenchmarkPlans_10000Services100Nodes computes every plan from nothing,
// as a sync does when what every Service reads changed: a node, a pool, a
// peer, the live speakers.
func BenchmarkPlans_10000Services100Nodes(b *testing.B) {
	in, peers := scale(100, 10000)
	b.ReportAllocs()
	for b.Loop() {
		newPlanner().plan(in, peers)
	}
}

// BenchmarkPlans_OneServiceChanged_10000Services100Nodes brings the plans
// up to date after one Service changed, as a sync does then.
func BenchmarkPlans_OneServiceChanged_10000Services100Nodes(b *testing.B) {
	in, peers := scale(100, 10000)
	p := newPlanner()
	p.plan(in, peers)
	changed := in.services[len(in.services)/2]
	b.ReportAllocs()
	for b.Loop() {
		changed.ResourceVersion += "x"
		p.plan(in, peers)
		if p.computed != 1 {
			b.Fatalf("computed %d parts, want 1", p.computed)
		}
	}
}

func TestScaleWorld_AnnouncesEveryService(t *testing.T) {
	in, peers := scale(10, 100)
	l2, notAnnounced := l2Plan(in)
	bgp := bgpPlan(in, peers)
	if len(l2) != 50 || len(bgp) != 50 || len(notAnnounced) != 0 {
		t.Fatalf("l2 %d, bgp %d, not announced %v; want 50, 50, none", len(l2), len(bgp), notAnnounced)
	}
	for addr, a := range l2 {
		if a.owner == "" {
			t.Errorf("%s: no owner: %s", addr, a.reason)
		}
	}
	for addr, a := range bgp {
		if len(a.nodes) == 0 {
			t.Errorf("%s: no node: %s", addr, a.reason)
		}
	}
}

// BenchmarkConditions_OneServiceChanged_10000Services100Nodes is what a
// sync after one Service changed adds to the plans: the Announced
// conditions this node writes, looked at again for that Service only.
func BenchmarkConditions_OneServiceChanged_10000Services100Nodes(b *testing.B) {
	in, peers := scale(100, 10000)
	p := newPlanner()
	w := testWriter("node-000")
	defer w.queue.ShutDown()
	up := allUp(peers, slices.Collect(maps.Keys(in.nodes))...)
	l2, notAnnounced, bgp := p.plan(in, peers)
	w.queueConditions(conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced}, up)
	changed := in.services[len(in.services)/2]
	b.ReportAllocs()
	for b.Loop() {
		changed.ResourceVersion += "x"
		l2, notAnnounced, bgp := p.plan(in, peers)
		w.queueConditions(conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced}, up)
	}
}
