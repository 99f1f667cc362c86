// Package bgp tests ironlb-speaker's BGP mode in the lab against the FRR
// router: the external client, which has no other way in, reaches Services
// through the routes the speakers advertise.
package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{CCM: true, Speakers: true})
}

var peerResource = v1alpha1.BGPPeerResource

// peer creates a BGPPeer for the lab router (IPv4 or IPv6 session) with
// short timers, deleted when the test ends.
func peer(f *framework.F, name string, ipv6 bool, mutate func(*v1alpha1.BGPPeerSpec)) {
	f.T.Helper()
	addr := f.RouterLAN()[0]
	if ipv6 {
		addr = f.RouterLAN()[1]
	}
	spec := v1alpha1.BGPPeerSpec{
		Address: addr.String(), ASN: lab.RouterASN, LocalASN: lab.NodeASN,
		HoldTime:      &metav1.Duration{Duration: 3 * time.Second},
		KeepaliveTime: &metav1.Duration{Duration: time.Second},
		ConnectTime:   &metav1.Duration{Duration: time.Second},
	}
	if mutate != nil {
		mutate(&spec)
	}
	if err := f.CreateBGPPeer(f.Ctx, name, spec); err != nil {
		f.T.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) {
		_ = f.Dynamic.Resource(peerResource).Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// pool creates a BGP pool from slot i of the routed range.
func pool(f *framework.F, name string, i int, adv v1alpha1.BGPAdvertisement) {
	f.T.Helper()
	f.Pool(name, f.TestPool(i), func(s *v1alpha1.IPPoolSpec) { s.BGP = &adv })
}

// service creates a dual-stack Service from pool with endpoints on nodes.
func service(f *framework.F, name, pool string, nodes []int, mutate func(*corev1.Service)) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	return f.DualStackService(name, pool, nodes, mutate)
}

// nextHops waits until the router's RIB holds addr's host route through
// exactly the given nodes, and returns them.
func nextHops(f *framework.F, addr netip.Addr, nodes ...int) {
	f.T.Helper()
	var want []netip.Addr
	for _, n := range nodes {
		i := 0
		if addr.Is6() {
			i = 1
		}
		want = append(want, f.NodeAddrs(n)[i])
	}
	slices.SortFunc(want, netip.Addr.Compare)
	prefix := framework.Host(addr)
	f.Eventually(fmt.Sprintf("the router routes %s via %v", prefix, want), 100, 200*time.Millisecond, func() error {
		routes, err := f.RouterRoutes(f.Ctx, addr.Is6())
		if err != nil {
			return err
		}
		r, ok := routes[prefix]
		if len(want) == 0 {
			if ok && r.Protocol == "bgp" {
				return fmt.Errorf("still routed via %v", r.NextHops)
			}
			return nil
		}
		if !ok || r.Protocol != "bgp" {
			return fmt.Errorf("no BGP route (have %+v)", r)
		}
		got := slices.Clone(r.NextHops)
		slices.SortFunc(got, netip.Addr.Compare)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("next hops %v", got)
		}
		return nil
	})
}

// TestExternalClientReachesThroughRouter: both address families, over an
// IPv4 and an IPv6 session, reach the router from every node (ECMP), and
// the external client gets answers; BGPPeer status shows each node's session.
func TestExternalClientReachesThroughRouter(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	peer(f, "router-v6", true, nil)
	pool(f, "routed", 0, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "routed", []int{1, 2, 3}, nil)
	for _, a := range addrs {
		nextHops(f, a, 1, 2, 3)
		f.Curl(f.ExternalNS(), a, "endpoint=web-n", 40)
	}
	f.Eventually("every node reports an Established session in BGPPeer status", 50, 200*time.Millisecond, func() error {
		for _, name := range []string{"router-v4", "router-v6"} {
			u, err := f.Dynamic.Resource(peerResource).Get(f.Ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			p := &v1alpha1.BGPPeer{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
				return err
			}
			established := 0
			for _, n := range p.Status.Nodes {
				if n.State == "Established" && n.PrefixesAdvertised >= 1 {
					established++
				}
			}
			if established != f.Nodes {
				return fmt.Errorf("BGPPeer %s status: %+v", name, p.Status.Nodes)
			}
		}
		return nil
	})
}

// TestLocalTrafficPolicyNarrowsNextHops: with externalTrafficPolicy Local
// only nodes with a local endpoint advertise, and the route follows the
// endpoint when it moves.
func TestLocalTrafficPolicyNarrowsNextHops(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	peer(f, "router-v6", true, nil)
	pool(f, "local", 1, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "local", []int{2}, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	for _, a := range addrs {
		nextHops(f, a, 2)
		f.Curl(f.ExternalNS(), a, "endpoint=web-n2 node=node2", 40)
	}
	if err := f.MoveEndpoint(f.Ctx, "web-n2", 3); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		nextHops(f, a, 3)
		f.Curl(f.ExternalNS(), a, "node=node3", 40)
	}
}

// TestCommunities: standard and large communities reach the router.
func TestCommunities(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	pool(f, "tagged", 2, v1alpha1.BGPAdvertisement{Communities: []v1alpha1.Community{"65000:100", "65000:1:2"}})
	_, addrs := service(f, "web", "tagged", []int{1}, nil)
	nextHops(f, addrs[0], 1, 2, 3)
	out, err := f.Vtysh(f.Ctx, "show bgp ipv4 unicast "+addrs[0].String()+"/32 json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"65000:100", "65000:1:2"} {
		if !strings.Contains(out, want) {
			t.Errorf("the router's route for %s lacks community %s:\n%s", addrs[0], want, out)
		}
	}
}

// TestGracefulStopWithdrawsFirst: a speaker stopped with SIGTERM withdraws
// its routes before it exits; traffic keeps flowing through the others; a
// killed node's route goes after the hold time.
func TestGracefulStopAndNodeDeath(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	pool(f, "stop", 3, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "stop", []int{1, 2, 3}, nil)
	a := addrs[0]
	nextHops(f, a, 1, 2, 3)
	stopNode2Speaker(f, a)
	nextHops(f, a, 1, 3)
	f.Curl(f.ExternalNS(), a, "endpoint=", 10)

	if err := f.NodeDown(f.Ctx, 3); err != nil {
		t.Fatal(err)
	}
	nextHops(f, a, 1) // after the 3 s hold time
	f.Curl(f.ExternalNS(), a, "endpoint=web-n1", 40)
}

// TestBadPeersDoNotDisturb: a BGPPeer with a wrong ASN and one with an
// address nobody answers never affect a working session; the wrong ASN is
// reported in status with the router's reason.
func TestBadPeersDoNotDisturb(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	pool(f, "bad", 4, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "bad", []int{1, 2, 3}, nil)
	nextHops(f, addrs[0], 1, 2, 3)
	before, err := f.Vtysh(f.Ctx, "show bgp summary json")
	if err != nil {
		t.Fatal(err)
	}
	peer(f, "wrong-asn", true, func(s *v1alpha1.BGPPeerSpec) { s.ASN = 65999 })
	peer(f, "nobody", false, func(s *v1alpha1.BGPPeerSpec) { s.Address = f.ExternalAddrs()[0].String() })
	f.Eventually("the wrong ASN is reported in status", 50, 200*time.Millisecond, func() error {
		u, err := f.Dynamic.Resource(peerResource).Get(f.Ctx, "wrong-asn", metav1.GetOptions{})
		if err != nil {
			return err
		}
		p := &v1alpha1.BGPPeer{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
			return err
		}
		for _, n := range p.Status.Nodes {
			if n.State != "Established" && n.Message != "" {
				return nil
			}
		}
		return fmt.Errorf("status %+v", p.Status.Nodes)
	})
	time.Sleep(2 * time.Second)
	after, err := f.Vtysh(f.Ctx, "show bgp summary json")
	if err != nil {
		t.Fatal(err)
	}
	if uptimes(before) != uptimes(after) {
		t.Errorf("the good sessions restarted:\nbefore %s\nafter %s", uptimes(before), uptimes(after))
	}
	nextHops(f, addrs[0], 1, 2, 3)
	f.Curl(f.ExternalNS(), addrs[0], "endpoint=", 10)
}

// uptimes lists the IPv4 sessions' establishment counters, which change
// when a session flaps.
func uptimes(summary string) string {
	var out []string
	for _, line := range strings.Split(summary, "\n") {
		if strings.Contains(line, "connectionsEstablished") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, " ")
}

// TestPasswordSession: a session with a TCP MD5 password from a Secret in
// ironlb-system comes up when the router agrees; a wrong password is
// reported in status and never established; a Secret in another namespace,
// which deploy/'s RBAC does not let the speaker read, is reported as such.
func TestPasswordSession(t *testing.T) {
	f := framework.New(t)
	node1, node2 := f.NodeAddrs(1)[0], f.NodeAddrs(2)[0]
	var lines []string
	for _, a := range []netip.Addr{node1, node2} {
		lines = append(lines,
			fmt.Sprintf("neighbor %s remote-as external", a),
			fmt.Sprintf("neighbor %s password s3cret", a),
			fmt.Sprintf("neighbor %s timers connect 1", a),
			"address-family ipv4 unicast",
			fmt.Sprintf("neighbor %s activate", a),
			"exit-address-family")
	}
	if err := f.ConfigureRouter(f.Ctx, append([]string{fmt.Sprintf("router bgp %d", lab.RouterASN)}, lines...)...); err != nil {
		t.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) {
		_ = f.ConfigureRouter(ctx, fmt.Sprintf("router bgp %d", lab.RouterASN), "no neighbor "+node1.String(), "no neighbor "+node2.String())
	})
	secret := func(ns, name, pw string) *corev1.SecretReference {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"password": []byte(pw)}}
		if _, err := f.Client.CoreV1().Secrets(ns).Create(f.Ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.Cleanup(func(ctx context.Context) { _ = f.Client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}) })
		return &corev1.SecretReference{Name: name, Namespace: ns}
	}
	right := secret(lab.Namespace, f.Namespace+"-right", "s3cret")
	wrong := secret(lab.Namespace, f.Namespace+"-wrong", "guess")
	elsewhere := secret(f.Namespace, "elsewhere", "s3cret")
	onNode := func(n int, ref *corev1.SecretReference) func(*v1alpha1.BGPPeerSpec) {
		return func(s *v1alpha1.BGPPeerSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": f.NodeName(n)}}
			s.PasswordSecretRef = ref
		}
	}
	peer(f, "md5-right", false, onNode(1, right))
	peer(f, "md5-wrong", false, onNode(2, wrong))
	peer(f, "md5-elsewhere", false, onNode(3, elsewhere))
	pool(f, "md5", 5, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "md5", []int{1, 2}, nil)
	nextHops(f, addrs[0], 1)
	f.Curl(f.ExternalNS(), addrs[0], "endpoint=", 40)
	for _, c := range []struct{ peer, node, says string }{
		{"md5-wrong", "node2", "md5"},
		{"md5-elsewhere", "node3", "may not read it"},
	} {
		f.Eventually(c.peer+" reports why it is down", 50, 200*time.Millisecond, func() error {
			st := peerStatus(f, c.peer)
			for _, n := range st.Nodes {
				if n.Node == c.node && n.State != "Established" && strings.Contains(strings.ToLower(n.Message), c.says) {
					return nil
				}
			}
			return fmt.Errorf("status %+v", st.Nodes)
		})
	}
	st := peerStatus(f, "md5-right")
	if len(st.Nodes) != 1 || st.Nodes[0].Node != "node1" || st.Nodes[0].State != "Established" {
		t.Errorf("md5-right status %+v, want node1 Established only", st.Nodes)
	}
}

func peerStatus(f *framework.F, name string) v1alpha1.BGPPeerStatus {
	f.T.Helper()
	u, err := f.Dynamic.Resource(peerResource).Get(f.Ctx, name, metav1.GetOptions{})
	if err != nil {
		f.T.Fatal(err)
	}
	p := &v1alpha1.BGPPeer{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
		f.T.Fatal(err)
	}
	return p.Status
}

// TestBothModes: a pool with l2 and bgp is answered on the LAN by one node
// and routed from every node; the condition says both.
func TestBothModes(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-v4", false, nil)
	f.Pool("both", f.L2TestPool(7), func(s *v1alpha1.IPPoolSpec) {
		s.L2 = &v1alpha1.L2Advertisement{}
		s.BGP = &v1alpha1.BGPAdvertisement{}
	})
	svc, addrs := service(f, "web", "both", []int{1, 2, 3}, nil)
	nextHops(f, addrs[0], 1, 2, 3)
	owner := f.WaitOwner(addrs[0], "a node", func(int) bool { return true })
	f.Curl(f.ClientNS(), addrs[0], "endpoint=", 40)
	f.Curl(f.ExternalNS(), addrs[0], "endpoint=", 40)
	s, err := f.WaitCondition(f.Ctx, svc, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Status.Conditions {
		if c.Type == v1alpha1.ConditionAnnounced {
			for _, want := range []string{"by BGP from node1,node2,node3 to router-v4", fmt.Sprintf("by node%d on eth0 (ARP)", owner)} {
				if !strings.Contains(c.Message, want) {
					t.Errorf("condition %q does not say %q", c.Message, want)
				}
			}
		}
	}
	m, err := f.SpeakerMetrics(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`ironlb_speaker_bgp_session_up{peer="router-v4"} 1`, `ironlb_speaker_bgp_prefixes_advertised{peer="router-v4"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("node1's metrics lack %s", want)
		}
	}
}

// TestBFD: with spec.bfd, every node's BFD session with the router comes
// Up and BGPPeer status says so. A speaker stopped with SIGTERM has withdrawn
// its route when it exits. A node that dies is dropped by the router because
// BFD went down: the hold time is 90 s, and the wait for the next hop to go
// is bounded well below it.
func TestBFD(t *testing.T) {
	f := framework.New(t)
	peer(f, "router-bfd", false, func(s *v1alpha1.BGPPeerSpec) {
		s.HoldTime = &metav1.Duration{Duration: 90 * time.Second}
		s.KeepaliveTime = &metav1.Duration{Duration: 30 * time.Second}
		s.BFD = &v1alpha1.BFDSettings{}
	})
	pool(f, "bfd", 6, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "bfd", []int{1, 2, 3}, nil)
	a := addrs[0]
	nextHops(f, a, 1, 2, 3)
	f.Eventually("the router's BFD session with every node is up", 50, 200*time.Millisecond, func() error {
		peers, err := f.RouterBFDPeers(f.Ctx)
		if err != nil {
			return err
		}
		for n := 1; n <= 3; n++ {
			if st := peers[f.NodeAddrs(n)[0]]; st != "up" {
				return fmt.Errorf("node%d: %q (all: %v)", n, st, peers)
			}
		}
		return nil
	})
	f.Eventually("BGPPeer status shows BFD Up on every node", 50, 200*time.Millisecond, func() error {
		st := peerStatus(f, "router-bfd")
		up := 0
		for _, n := range st.Nodes {
			if n.BFD != nil && n.BFD.State == "Up" {
				up++
			}
		}
		if up != 3 {
			return fmt.Errorf("status %+v", st.Nodes)
		}
		return nil
	})

	// Planned stop: withdrawn before the speaker exits.
	stopNode2Speaker(f, a)

	// Death: BFD, not the 90 s hold time, drops the node (nextHops waits
	// at most 20 s).
	if err := f.NodeDown(f.Ctx, 3); err != nil {
		t.Fatal(err)
	}
	nextHops(f, a, 1)
	f.Curl(f.ExternalNS(), a, "endpoint=web-n1", 40)
}

// TestBFDToRouterWithout: a BGPPeer with spec.bfd whose router runs no BFD
// for the nodes still carries routes over BGP, and BGPPeer status says on
// every node that BFD is not up and why.
func TestBFDToRouterWithout(t *testing.T) {
	f := framework.New(t)
	router := fmt.Sprintf("router bgp %d", lab.RouterASN)
	if err := f.ConfigureRouter(f.Ctx, router, "no neighbor nodes bfd"); err != nil {
		t.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) {
		_ = f.ConfigureRouter(ctx, router, "neighbor nodes bfd profile "+lab.RouterBFDProfile)
	})
	peer(f, "router-without-bfd", false, func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BFDSettings{} })
	pool(f, "nobfd", 13, v1alpha1.BGPAdvertisement{})
	_, addrs := service(f, "web", "nobfd", []int{1, 2, 3}, nil)
	nextHops(f, addrs[0], 1, 2, 3)
	f.Curl(f.ExternalNS(), addrs[0], "endpoint=web-n", 10)
	f.Eventually("BGPPeer status says on every node why BFD is not up", 50, 200*time.Millisecond, func() error {
		st := peerStatus(f, "router-without-bfd")
		why := 0
		for _, n := range st.Nodes {
			if n.State == "Established" && n.BFD != nil && n.BFD.State != "Up" && strings.Contains(n.BFD.Message, "does the router run BFD") {
				why++
			}
		}
		if why != 3 {
			return fmt.Errorf("status %+v", st.Nodes)
		}
		return nil
	})
}

// stopNode2Speaker stops node2's speaker with SIGTERM and checks
// that the router no longer routes a through node2 once it has exited; the
// test brings node2's speaker and node3 (which it takes down later) back.
func stopNode2Speaker(f *framework.F, a netip.Addr) {
	f.T.Helper()
	f.Cleanup(func(ctx context.Context) {
		_ = f.NodeUp(ctx, 3)
		if !f.Alive(f.SpeakerName(2)) {
			_ = f.Restart(f.SpeakerName(2))
		}
	})
	if err := f.Stop(f.SpeakerName(2), 10*time.Second); err != nil {
		f.T.Fatal(err)
	}
	routes, err := f.RouterRoutes(f.Ctx, false)
	if err != nil {
		f.T.Fatal(err)
	}
	if slices.Contains(routes[framework.Host(a)].NextHops, f.NodeAddrs(2)[0]) {
		f.T.Errorf("node2's route is still on the router after its speaker exited: %v", routes[framework.Host(a)].NextHops)
	}
}
