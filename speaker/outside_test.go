package speaker

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

func deletingPool(p *v1alpha1.IPPool) *v1alpha1.IPPool {
	p.DeletionTimestamp = &metav1.Time{}
	return p
}

// An address is announced with the settings of the pool ironlb-ccm names on the Service when
// that pool holds it, else of any pool that holds it; an address that left every pool is still
// announced with the pool named, as long as it exists (shrunk, or being deleted).
func TestPoolOf_WhichPoolAnnouncesAnAddress(t *testing.T) {
	shrunk := l2Pool("shrunk", nil, nil, "10.0.0.0/28")
	other := l2Pool("other", nil, nil, "10.0.1.0/24")
	overlap := l2Pool("overlap", nil, nil, "10.0.0.0/24")
	dying := deletingPool(l2Pool("dying", nil, nil, "10.0.2.0/24"))
	for _, tc := range []struct {
		name    string
		pools   []*v1alpha1.IPPool
		named   string
		addr    string
		pool    string // "" for none
		outside string // substring; "" for none
		// unrecorded: ironlb-ccm's record names another address.
		unrecorded bool
	}{
		{name: "the pool named holds it", pools: []*v1alpha1.IPPool{other, shrunk}, named: "shrunk", addr: "10.0.0.5", pool: "shrunk"},
		{name: "the pool named holds it, another too", pools: []*v1alpha1.IPPool{overlap, shrunk}, named: "shrunk", addr: "10.0.0.5", pool: "shrunk"},
		{name: "another pool holds it: the range moved", pools: []*v1alpha1.IPPool{shrunk, other}, named: "shrunk", addr: "10.0.1.5", pool: "other"},
		{name: "no pool named", pools: []*v1alpha1.IPPool{other}, addr: "10.0.1.5", pool: "other"},
		{name: "left the pool named", pools: []*v1alpha1.IPPool{other, shrunk}, named: "shrunk", addr: "10.0.0.200", pool: "shrunk",
			outside: "in no IPPool: announced with the settings of IPPool shrunk, which no longer holds it"},
		{name: "the pool named is being deleted", pools: []*v1alpha1.IPPool{other, dying}, named: "dying", addr: "10.0.2.7", pool: "dying",
			outside: "IPPool dying, which announces it, is being deleted"},
		{name: "left every pool, none named", pools: []*v1alpha1.IPPool{other, shrunk}, addr: "10.9.9.9"},
		{name: "left every pool, the pool named is gone", pools: []*v1alpha1.IPPool{other}, named: "shrunk", addr: "10.0.0.200"},
		{name: "in no pool and not in ironlb's record: another controller's address", pools: []*v1alpha1.IPPool{other, shrunk}, named: "shrunk", addr: "10.0.0.200",
			unrecorded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := netip.MustParseAddr(tc.addr)
			svc := service("s", tc.named, tc.addr)
			if tc.unrecorded {
				svc.Annotations[v1alpha1.AnnotationAllocatedAddresses] = "10.0.0.5"
			}
			p := poolOf(tc.pools, cached(svc), addr)
			switch {
			case tc.pool == "" && p != nil:
				t.Fatalf("poolOf = %s, want none", p.Name)
			case tc.pool == "":
				return
			case p == nil || p.Name != tc.pool:
				t.Fatalf("poolOf = %v, want %s", p, tc.pool)
			}
			got := outsidePool(p, addr)
			if (tc.outside == "") != (got == "") || !strings.Contains(got, tc.outside) {
				t.Errorf("outsidePool = %q, want %q", got, tc.outside)
			}
		})
	}
}

// The speakers keep answering for an address that left its pool, on the pool's interfaces and
// from the nodes it selects, and say so in the Announced condition.
func TestL2Plan_AddressThatLeftItsPoolIsStillAnswered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pool   *v1alpha1.IPPool
		addr   string
		reason string
		msg    string
	}{
		{name: "pool shrunk", addr: "10.0.9.9",
			pool:   l2Pool("p", []string{"eth1"}, map[string]string{"zone": "b"}, "10.0.0.0/24"),
			reason: ReasonAddressNotInPool,
			msg:    "10.0.9.9 by n2 on eth1 (ARP), in no IPPool: announced with the settings of IPPool p, which no longer holds it"},
		{name: "pool being deleted", addr: "10.0.0.9",
			pool:   deletingPool(l2Pool("p", []string{"eth1"}, map[string]string{"zone": "b"}, "10.0.0.0/24")),
			reason: ReasonAddressNotInPool,
			msg:    "10.0.0.9 by n2 on eth1 (ARP), IPPool p, which announces it, is being deleted"},
		{name: "in the pool", addr: "10.0.0.9",
			pool:   l2Pool("p", []string{"eth1"}, map[string]string{"zone": "b"}, "10.0.0.0/24"),
			reason: ReasonAnnounced, msg: "10.0.0.9 by n2 on eth1 (ARP)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service("s", "p", tc.addr)
			in := world([]string{"n1", "n2"}, []*v1alpha1.IPPool{tc.pool}, svc)
			in.nodes["n2"].Labels = map[string]string{"zone": "b"}
			in.alive["n1"], in.alive["n2"] = heartbeat("eth0", "eth1"), heartbeat("eth0", "eth1")
			plan, notAnnounced := l2Plan(in)
			a := only(t, plan, tc.addr)
			if a.owner != "n2" || !slices.Equal(a.interfaces, []string{"eth1"}) || a.pool != "p" {
				t.Errorf("announcement: owner %q on %v from %q, want n2 on [eth1] from p", a.owner, a.interfaces, a.pool)
			}
			if len(notAnnounced) != 0 {
				t.Errorf("notAnnounced = %v, want none", notAnnounced)
			}
			c := announcedCondition(cached(svc), plan, nil, nil, notAnnounced[key("s")], "")
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != tc.reason || c.Message != tc.msg {
				t.Errorf("condition = %+v, want True/%s %q", c, tc.reason, tc.msg)
			}
			// The speakers' record of the owner still reads from that message.
			svc.Status.Conditions = []metav1.Condition{*c}
			if owners := announcedOwners(cached(svc)); owners[netip.MustParseAddr(tc.addr)] != "n2" {
				t.Errorf("owners read from %q = %v, want n2", c.Message, owners)
			}
		})
	}
}

// By BGP, an address that left its pool goes out as a host route with the pool's attributes,
// whatever the pool's aggregation length.
func TestBGPPlan_AddressThatLeftItsPoolIsStillAdvertised(t *testing.T) {
	pool := bgpPoolWith("b", func(b *v1alpha1.BGPAdvertisement) {
		b.AggregationLength, b.LocalPref = ptr[int32](24), ptr[uint32](150)
		b.Communities = []v1alpha1.Community{"65000:7"}
	}, "10.0.0.0/24")
	plan := bgpPlan(world([]string{"n1"}, []*v1alpha1.IPPool{pool}, service("s", "b", "10.0.7.7")), twoPeers())
	a := plan[netip.MustParseAddr("10.0.7.7")]
	if a == nil || len(plan) != 1 {
		t.Fatalf("plan = %v, want one advertisement of 10.0.7.7", plan)
	}
	if a.prefix != netip.MustParsePrefix("10.0.7.7/32") || a.pool != "b" || !slices.Equal(a.nodes, []string{"n1"}) ||
		!slices.Equal(a.communities, []string{"65000:7"}) || a.localPref == nil || *a.localPref != 150 || a.reason != "" {
		t.Errorf("advertisement = %+v, want 10.0.7.7/32 from n1 with pool b's community and local preference", a)
	}
	if !strings.Contains(a.outside, "which no longer holds it") {
		t.Errorf("outside = %q, want it to say pool b no longer holds the address", a.outside)
	}
}

// The planner keeps a Service's address announced when its pool is being deleted and when it
// shrinks; a pool being deleted is a change of the world even when its generation is the same.
func TestPlanner_PoolDeletedThenShrunkKeepsAnnouncing(t *testing.T) {
	p := newPlanner()
	svc := service("s", "p", "10.0.0.9")
	svc.ResourceVersion = "1"
	pool := l2Pool("p", nil, nil, "10.0.0.0/24")
	pool.UID, pool.Generation = "u1", 1
	in := world([]string{"n1"}, []*v1alpha1.IPPool{pool}, svc)
	outsideOf := func(what string) string {
		t.Helper()
		l2, notAnnounced, _ := p.plan(in, nil)
		a := l2[netip.MustParseAddr("10.0.0.9")]
		if a == nil || a.owner != "n1" || len(notAnnounced) != 0 {
			t.Fatalf("%s: announcement %+v, notAnnounced %v; want 10.0.0.9 answered by n1", what, a, notAnnounced)
		}
		return a.outside
	}
	if got := outsideOf("in the pool"); got != "" {
		t.Errorf("in the pool: outside %q, want none", got)
	}
	in.pools = []*v1alpha1.IPPool{deletingPool(pool.DeepCopy())}
	if got := outsideOf("being deleted, same generation"); !strings.Contains(got, "is being deleted") {
		t.Errorf("being deleted: outside %q, want the pool is being deleted", got)
	}
	shrunk := deletingPool(pool.DeepCopy())
	shrunk.Spec.Addresses, shrunk.Generation = []v1alpha1.AddressRange{"10.0.0.0/29"}, 2
	in.pools = []*v1alpha1.IPPool{shrunk}
	if got := outsideOf("shrunk too"); !strings.Contains(got, "no longer holds it") {
		t.Errorf("shrunk: outside %q, want the pool no longer holds it", got)
	}
}

// Another controller's address in the status of a Service ironlb handles, even one inside an
// ironlb pool, is never answered nor advertised once ironlb-ccm keeps a record of the Service's
// addresses, and the condition says why; ironlb's own address next to it is, and so is every
// address of a Service without a record.
func TestPlans_AnotherControllersAddressIsNotAnnounced(t *testing.T) {
	l2 := l2Pool("p", []string{"eth1"}, nil, "10.0.0.0/24")
	bgp := bgpPool("b", "10.0.1.0/24")
	for _, tc := range []struct {
		name   string
		record *string // ironlb.io/allocated-addresses; nil: absent
		want   []string
		note   string
	}{
		{name: "ironlb recorded another address", record: ptr("10.0.0.5,10.0.1.5"), want: []string{"10.0.0.5", "10.0.1.5"},
			note: "10.0.0.7 is not an address ironlb-ccm allocated to this Service (ironlb.io/allocated-addresses names 10.0.0.5,10.0.1.5): another controller wrote it"},
		{name: "ironlb recorded none (in conflict from the start)", record: ptr(""), want: nil,
			note: "10.0.0.5 is not an address ironlb-ccm allocated"},
		{name: "no record: the status decides", record: nil, want: []string{"10.0.0.5", "10.0.0.7", "10.0.1.5", "10.0.1.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service("s", "", "10.0.0.5", "10.0.0.7", "10.0.1.5", "10.0.1.7")
			if tc.record != nil {
				svc.Annotations = map[string]string{v1alpha1.AnnotationAllocatedAddresses: *tc.record}
			}
			in := world([]string{"n1"}, []*v1alpha1.IPPool{l2, bgp}, svc)
			in.alive["n1"] = heartbeat("eth0", "eth1")
			l2plan, notAnnounced := l2Plan(in)
			bgpplan := bgpPlan(in, twoPeers())
			var got []string
			for a := range l2plan {
				got = append(got, a.String())
			}
			for a := range bgpplan {
				got = append(got, a.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("announced %v, want %v", got, tc.want)
			}
			if n := notAnnounced[key("s")]; !strings.Contains(n, tc.note) || (tc.note == "") != (n == "") {
				t.Errorf("not announced: %q, want it to say %q", n, tc.note)
			}
		})
	}
}
