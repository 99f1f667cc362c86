package speaker

import (
	"cmp"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// TestPlannerFollowsChanges runs one planner through a series of changes.
// After each, its plans must be those computed from nothing, and it must
// have computed the parts of the Services that changed only, or of every
// Service when what they all read changed.
func TestPlannerFollowsChanges(t *testing.T) {
	version := 0
	versioned := func(s *v1.Service) *v1.Service {
		version++
		s.ResourceVersion = fmt.Sprint(version)
		return s
	}
	slice := func(svc string, nodes ...string) []*discoveryv1.EndpointSlice {
		var eps []ep
		for _, n := range nodes {
			eps = append(eps, ep{node: n, ready: true})
		}
		es := endpointSlice(svc, eps...)
		version++
		es.ResourceVersion = fmt.Sprint(version)
		return []*discoveryv1.EndpointSlice{es}
	}
	replace := func(in *inputs, svc *v1.Service) {
		in.services = slices.DeleteFunc(in.services, func(s *lbService) bool { return s.Name == svc.Name })
		in.services = append(in.services, cached(versioned(svc)))
	}
	l2 := l2Pool("l2", nil, nil, "10.0.0.0/24")
	bgp := bgpPool("bgp", "10.1.0.0/24")
	l2.Generation, bgp.Generation = 1, 1
	in := world([]string{"n1", "n2", "n3", "n4", "n5"}, []*v1alpha1.IPPool{l2, bgp},
		versioned(service("a", "l2", "10.0.0.1")),
		versioned(service("b", "l2", "10.0.0.2")),
		versioned(service("c", "bgp", "10.1.0.1")),
		versioned(local(service("d", "l2", "10.0.0.3"))),
		versioned(local(service("e", "l2", "10.0.0.1"))), // shares a's address
		versioned(service("f", "", "10.9.9.9")),          // in no pool
	)
	in.slices[key("d")] = slice("d", "n1")
	in.slices[key("e")] = slice("e", "n2", "n3")
	in.recorded = map[netip.Addr]string{}
	peers := []*v1alpha1.BGPPeer{bgpPeer("router", nil, nil)}

	p := newPlanner()
	steps := []struct {
		name     string
		change   func(in *inputs)
		computed int
	}{
		{"first sync", func(*inputs) {}, 6},
		{"nothing changed", func(*inputs) {}, 0},
		{"one Service moves to another address", func(in *inputs) { replace(in, service("b", "l2", "10.0.0.9")) }, 1},
		{"a Service is deleted", func(in *inputs) {
			in.services = slices.DeleteFunc(in.services, func(s *lbService) bool { return s.Name == "c" })
		}, 0},
		{"the endpoints of a Local Service move", func(in *inputs) { in.slices[key("d")] = slice("d", "n4") }, 1},
		{"a Service sharing an address loses its endpoints", func(in *inputs) { in.slices[key("e")] = slice("e") }, 1},
		{"an owner is recorded for an address", func(in *inputs) { in.recorded[netip.MustParseAddr("10.0.0.9")] = "n5" }, 0},
		{"a Service comes back", func(in *inputs) { replace(in, service("c", "bgp", "10.1.0.1")) }, 1},
		{"a Service gets a second address", func(in *inputs) { replace(in, service("a", "l2", "10.0.0.1", "10.1.0.7")) }, 1},
		{"a node's speaker is gone", func(in *inputs) { delete(in.alive, "n5") }, 6},
		{"a node is excluded", func(in *inputs) { in.nodes["n2"] = node("n2", map[string]string{LabelExcludeFromLB: ""}, false) }, 6},
		{"an interface goes down", func(in *inputs) { in.alive["n3"] = heartbeat() }, 6},
		{"a pool's spec changes", func(in *inputs) {
			changed := l2Pool("l2", nil, map[string]string{"rack": "a"}, "10.0.0.0/24")
			changed.Generation = 2
			in.pools = []*v1alpha1.IPPool{changed, bgp}
		}, 6},
		{"a node is labelled for it", func(in *inputs) { in.nodes["n4"] = node("n4", map[string]string{"rack": "a"}, false) }, 6},
		{"a peer is relabelled", func(*inputs) { peers = []*v1alpha1.BGPPeer{bgpPeer("router", map[string]string{"x": "y"}, nil)} }, 6},
	}
	for _, step := range steps {
		step.change(&in)
		gotL2, gotNot, gotBGP := p.plan(in, peers)
		wantL2, wantNot, wantBGP := newPlanner().plan(in, peers)
		if !reflect.DeepEqual(gotL2, wantL2) {
			t.Errorf("%s: L2 plan\n got %v\nwant %v", step.name, describe(gotL2), describe(wantL2))
		}
		if !reflect.DeepEqual(gotBGP, wantBGP) {
			t.Errorf("%s: BGP plan\n got %v\nwant %v", step.name, gotBGP, wantBGP)
		}
		if !reflect.DeepEqual(gotNot, wantNot) {
			t.Errorf("%s: not announced %v, want %v", step.name, gotNot, wantNot)
		}
		if p.computed != step.computed {
			t.Errorf("%s: computed %d Services' parts, want %d", step.name, p.computed, step.computed)
		}
	}
}

func describe(plan map[netip.Addr]*announcement) map[string]string {
	out := map[string]string{}
	for addr, a := range plan {
		out[addr.String()] = fmt.Sprintf("owner %q on %v services %v reason %q", a.owner, a.interfaces, a.services, a.reason)
	}
	return out
}

// TestPlannerFollowsRecords gives an address the owner its record names,
// and takes it back when the record goes, with no Service's part computed.
func TestPlannerFollowsRecords(t *testing.T) {
	svc := service("a", "p", "10.0.0.1")
	svc.ResourceVersion = "1"
	in := world([]string{"n1", "n2", "n3"}, defaultPools, svc)
	addr := netip.MustParseAddr("10.0.0.1")
	p := newPlanner()
	first, _, _ := p.plan(in, nil)
	ranked := first[addr].owner
	other := "n1"
	if ranked == other {
		other = "n2"
	}
	for _, recorded := range []string{other, "", ranked} {
		in.recorded = map[netip.Addr]string{addr: recorded}
		got, _, _ := p.plan(in, nil)
		want := cmp.Or(recorded, ranked)
		if got[addr].owner != want || p.computed != 0 {
			t.Errorf("recorded %q: owner %q after computing %d parts, want %q after none", recorded, got[addr].owner, p.computed, want)
		}
	}
}

// TestPlannerWithoutVersions recomputes every time what the API server did
// not version: nothing says it did not change.
func TestPlannerWithoutVersions(t *testing.T) {
	in := world([]string{"n1", "n2"}, defaultPools, service("a", "p", "10.0.0.1"))
	p := newPlanner()
	p.plan(in, nil)
	in.services = []*lbService{cached(service("a", "p", "10.0.0.2"))}
	got, _, _ := p.plan(in, nil)
	if p.computed != 1 || got[netip.MustParseAddr("10.0.0.2")] == nil || len(got) != 1 {
		t.Fatalf("computed %d, plan %v; want a's new address only", p.computed, describe(got))
	}
}

// An address written twice in a Service's status is planned once, and
// leaves the plan with the Service.
func TestPlannerAddressWrittenTwice(t *testing.T) {
	twice := service("a", "p", "10.0.0.1", "10.0.0.1")
	twice.ResourceVersion = "1"
	other := service("b", "p", "10.0.0.1")
	other.ResourceVersion = "1"
	in := world([]string{"n1", "n2"}, defaultPools, twice, other)
	p := newPlanner()
	got, _, _ := p.plan(in, nil)
	a := got[netip.MustParseAddr("10.0.0.1")]
	if a == nil || len(a.services) != 2 {
		t.Fatalf("plan %v; want 10.0.0.1 shared by a and b once each", describe(got))
	}
	in.services = in.services[1:]
	got, _, _ = p.plan(in, nil)
	if a := got[netip.MustParseAddr("10.0.0.1")]; a == nil || len(a.services) != 1 || a.services[0] != key("b") {
		t.Fatalf("after a is gone: plan %v, want 10.0.0.1 held by b alone", describe(got))
	}
	in.services = nil
	if got, _, _ = p.plan(in, nil); len(got) != 0 || len(p.byAddr) != 0 {
		t.Fatalf("after both are gone: plan %v, %d addresses held; want none", describe(got), len(p.byAddr))
	}
}
