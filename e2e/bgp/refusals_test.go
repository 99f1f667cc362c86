package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
)

// TestBadAggregationIsRefused: an aggregationLength that would announce
// addresses outside its pool never reaches the router. On CIDRs the API
// server rejects it with a message; on a range, which the API server cannot
// check, the speakers refuse it and the Announced condition says why. A
// Service of another pool stays routed throughout.
func TestBadAggregationIsRefused(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	pool(f, "good", 8, v1alpha1.BGPAdvertisement{})
	_, good := service(f, "good", "good", []int{1, 2, 3}, nil)
	nextHops(f, good[0], 1, 2, 3)

	slot := f.TestPool(9)
	v4, v6 := slot[0], slot[1]
	short := int32(v4.Bits() - 4)
	err := f.CreatePool(f.Ctx, "too-short", v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{v1alpha1.AddressRange(v4.String())},
		BGP:       &v1alpha1.BGPAdvertisement{AggregationLength: &short},
	})
	if err == nil {
		f.Cleanup(func(ctx context.Context) {
			_ = f.Dynamic.Resource(v1alpha1.IPPoolResource).Delete(ctx, "too-short", metav1.DeleteOptions{})
		})
		t.Fatalf("an IPPool with aggregationLength %d on %s was accepted", short, v4)
	}
	if !strings.Contains(err.Error(), "bgp.aggregationLength must not be shorter than the prefix length") {
		t.Errorf("the rejection does not say why: %v", err)
	}

	// The first half of the /28 as a range, aggregated to the /28: the
	// aggregate would cover the other half.
	first, last := v4.Addr(), v4.Addr()
	for range 7 {
		last = last.Next()
	}
	whole := int32(v4.Bits())
	f.Pool("range", nil, func(s *v1alpha1.IPPoolSpec) {
		s.Addresses = []v1alpha1.AddressRange{v1alpha1.AddressRange(first.String() + "-" + last.String()), v1alpha1.AddressRange(v6.String())}
		s.BGP = &v1alpha1.BGPAdvertisement{AggregationLength: &whole}
	})
	svc, addrs := service(f, "ranged", "range", []int{1, 2, 3}, nil)
	s, err := f.WaitCondition(f.Ctx, svc, v1alpha1.ConditionAnnounced, metav1.ConditionFalse, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := conditionMessage(s.Status.Conditions)
	for _, want := range []string{"aggregationLength", v4.String(), "covers addresses outside the pool"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the Announced condition %q does not say %q", msg, want)
		}
	}
	// The IPv6 address, a host route, is announced; the IPv4 one is not,
	// neither as the aggregate nor by itself.
	for _, a := range addrs {
		if a.Is6() {
			nextHops(f, a, 1, 2, 3)
		}
	}
	routes, err := f.RouterRoutes(f.Ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{v4, framework.Host(addrs[0])} {
		if r, ok := routes[p]; ok && r.Protocol == "bgp" {
			t.Errorf("the router has %s via %v", p, r.NextHops)
		}
	}
	nextHops(f, good[0], 1, 2, 3)
	f.Curl(f.ExternalNS(), good[0], "endpoint=good-n", 10)
}

// TestRefusedPeerWhileServicesChange: BGPPeers that the API server accepts
// and the speakers refuse (a hold time that is not whole seconds, a second
// BGPPeer for the router's address) are added while Services are being
// created. Every Service is still routed through every node, the session
// that works never restarts, and each refused BGPPeer's status says why.
func TestRefusedPeerWhileServicesChange(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	pool(f, "busy", 10, v1alpha1.BGPAdvertisement{})
	_, first := service(f, "web0", "busy", []int{1, 2, 3}, nil)
	nextHops(f, first[0], 1, 2, 3)
	before, err := f.Vtysh(f.Ctx, "show bgp summary json")
	if err != nil {
		t.Fatal(err)
	}

	// The refused BGPPeers come between Services being created, so the
	// speakers handle them while they also plan new routes.
	const more = 5
	var all [][]netip.Addr
	for i := 1; i <= more; i++ {
		_, addrs := service(f, fmt.Sprintf("web%d", i), "busy", []int{1, 2, 3}, nil)
		all = append(all, addrs)
		switch i {
		case 2:
			peer(f, "router-v4-halfseconds", false, func(s *v1alpha1.BGPPeerSpec) {
				s.HoldTime = &metav1.Duration{Duration: 4500 * time.Millisecond}
			})
		case 3:
			peer(f, "router-v4-twice", false, nil) // after router-v4 by name: refused
		}
	}
	for _, addrs := range all {
		for _, a := range addrs {
			nextHops(f, a, 1, 2, 3)
		}
	}
	for _, c := range []struct{ peer, says string }{
		{"router-v4-halfseconds", "is not a positive whole number of seconds"},
		{"router-v4-twice", "is also BGPPeer router-v4's"},
	} {
		f.Eventually(c.peer+" reports why every node refuses it", 50, 200*time.Millisecond, func() error {
			st := peerStatus(f, c.peer)
			refused := 0
			for _, n := range st.Nodes {
				if n.State == "Invalid" && strings.Contains(n.Message, c.says) {
					refused++
				}
			}
			if refused != 3 {
				return fmt.Errorf("status %+v", st.Nodes)
			}
			return nil
		})
	}
	after, err := f.Vtysh(f.Ctx, "show bgp summary json")
	if err != nil {
		t.Fatal(err)
	}
	if uptimes(before) != uptimes(after) {
		t.Errorf("the working sessions restarted:\nbefore %s\nafter %s", uptimes(before), uptimes(after))
	}
	f.Curl(f.ExternalNS(), all[more-1][0], "endpoint=web5-n", 10)
}

// TestNoEstablishedSession: a pool that announces only to a BGPPeer whose
// sessions never come up (nobody answers its address) has its Services'
// Announced condition False with reason NoEstablishedSession, naming the
// peer, while a pool announced to the router is True.
func TestNoEstablishedSession(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	peer(f, "nobody", false, func(s *v1alpha1.BGPPeerSpec) { s.Address = f.ExternalAddrs()[0].String() })
	if err := f.LabelBGPPeer(f.Ctx, "nobody", map[string]string{"e2e.ironlb.io/peer": "nobody"}); err != nil {
		t.Fatal(err)
	}
	pool(f, "unsent", 11, v1alpha1.BGPAdvertisement{
		PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"e2e.ironlb.io/peer": "nobody"}},
	})
	pool(f, "sent", 12, v1alpha1.BGPAdvertisement{})
	unsent, _ := service(f, "unsent", "unsent", []int{1, 2, 3}, nil)
	sent, addrs := service(f, "sent", "sent", []int{1, 2, 3}, nil)
	nextHops(f, addrs[0], 1, 2, 3)

	s, err := f.WaitCondition(f.Ctx, unsent, v1alpha1.ConditionAnnounced, metav1.ConditionFalse, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := conditionReason(s.Status.Conditions); r != "NoEstablishedSession" {
		t.Errorf("reason %q, want NoEstablishedSession (%s)", r, conditionMessage(s.Status.Conditions))
	}
	if msg := conditionMessage(s.Status.Conditions); !strings.Contains(msg, "to nobody is Established") {
		t.Errorf("the condition %q does not name the peer", msg)
	}
	if _, err := f.WaitCondition(f.Ctx, sent, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 30*time.Second); err != nil {
		t.Error(err)
	}
}

func conditionMessage(cs []metav1.Condition) string {
	if c := meta.FindStatusCondition(cs, v1alpha1.ConditionAnnounced); c != nil {
		return c.Message
	}
	return ""
}

func conditionReason(cs []metav1.Condition) string {
	if c := meta.FindStatusCondition(cs, v1alpha1.ConditionAnnounced); c != nil {
		return c.Reason
	}
	return ""
}
