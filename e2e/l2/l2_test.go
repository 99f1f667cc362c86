// Package l2 tests ironlb-speaker's L2 mode in the lab: the LAN client
// reaches Services by ARP and NDP answered from exactly one node, which
// moves when that node, its speaker or its link fails.
package l2

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{CCM: true, Speakers: true})
}

// pool creates an L2 IPPool from slot i of the lab's L2 range that only
// Services naming it use.
func pool(f *framework.F, name string, i int, l2 *v1alpha1.L2Advertisement) {
	f.T.Helper()
	if l2 == nil {
		l2 = &v1alpha1.L2Advertisement{}
	}
	f.Pool(name, f.L2TestPool(i), func(s *v1alpha1.IPPoolSpec) { s.L2 = l2 })
}

// service creates a dual-stack Service from pool with endpoints on nodes.
func service(f *framework.F, name, pool string, nodes []int, mutate func(*corev1.Service)) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	return f.DualStackService(name, pool, nodes, mutate)
}

// announced waits until the Announced condition is True and names, for
// every address, the node that answers ARP/NDP for it, and returns them.
func announced(f *framework.F, svc types.NamespacedName, addrs []netip.Addr) map[netip.Addr]int {
	f.T.Helper()
	var owners map[netip.Addr]int
	f.Eventually(fmt.Sprintf("the Announced condition of %s names the answering nodes", svc), 50, 200*time.Millisecond, func() error {
		s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := findAnnounced(s)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("condition %+v", c)
		}
		owners = map[netip.Addr]int{}
		for _, part := range strings.Split(c.Message, "; ") {
			var addr, node, rest string
			if _, err := fmt.Sscanf(part, "%s by %s on %s", &addr, &node, &rest); err != nil {
				return fmt.Errorf("condition message %q: %v", c.Message, err)
			}
			var n int
			fmt.Sscanf(node, "node%d", &n)
			owners[netip.MustParseAddr(addr)] = n
		}
		for _, a := range addrs {
			if got := f.Owner(a); owners[a] == 0 || got != owners[a] {
				return fmt.Errorf("%s: condition says node%d, node%d answers (%q)", a, owners[a], got, c.Message)
			}
		}
		return nil
	})
	return owners
}

func findAnnounced(s *corev1.Service) *metav1.Condition {
	for i := range s.Status.Conditions {
		if s.Status.Conditions[i].Type == v1alpha1.ConditionAnnounced {
			return &s.Status.Conditions[i]
		}
	}
	return nil
}

// reach curls addr from the LAN client until an endpoint answers.
func reach(f *framework.F, addr netip.Addr, want string) string {
	f.T.Helper()
	return f.Curl(f.ClientNS(), addr, want, 40)
}

// TestAnnouncedReachableAndOneAnswer: both addresses of a dual-stack Service
// are reached from the LAN client through ARP and NDP; exactly one MAC
// answers, the owner's, which the condition names; a Service sharing the
// address answers from the same node; a Service without node ports works; a
// Service that becomes a LoadBalancer later is answered, and no longer once
// it stops being one (the speakers watch LoadBalancer Services only).
func TestAnnouncedReachableAndOneAnswer(t *testing.T) {
	f := framework.New(t)
	pool(f, "basic", 0, nil)
	svc, addrs := service(f, "web", "basic", []int{1, 2, 3}, func(s *corev1.Service) {
		s.Annotations[v1alpha1.AnnotationSharingKey] = "shared"
	})
	owners := announced(f, svc, addrs)
	for _, a := range addrs {
		reach(f, a, "endpoint=web-n")
		mac, err := lab.Neighbour(f.Ctx, f.ClientNS(), a)
		if err != nil || mac.String() != f.NodeMAC(owners[a]).String() {
			t.Errorf("%s: the client's neighbour entry is %v (%v), want node%d's %s", a, mac, err, owners[a], f.NodeMAC(owners[a]))
		}
	}

	// Same sharing key, another port: the same addresses, the same node.
	other := f.Service("other", func(s *corev1.Service) {
		policy := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		s.Annotations = map[string]string{v1alpha1.AnnotationPool: "basic", v1alpha1.AnnotationSharingKey: "shared"}
		s.Spec.Ports[0].Port = 81
	})
	got, err := f.WaitIngress(f.Ctx, other, 2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != addrs[0] || got[1] != addrs[1] {
		t.Fatalf("the sharing Service got %v, want %v", got, addrs)
	}
	shared := announced(f, other, got)
	for _, a := range addrs {
		if shared[a] != owners[a] || f.Owner(a) != owners[a] {
			t.Errorf("%s: shared Service announced by node%d, answering node%d, want node%d", a, shared[a], f.Owner(a), owners[a])
		}
	}

	// No node ports: traffic to the address needs none.
	nonp, nonpAddrs := service(f, "nonp", "basic", []int{2}, func(s *corev1.Service) {
		s.Spec.AllocateLoadBalancerNodePorts = new(bool)
	})
	announced(f, nonp, nonpAddrs)
	s, err := f.Client.CoreV1().Services(nonp.Namespace).Get(f.Ctx, nonp.Name, metav1.GetOptions{})
	if err != nil || s.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("Service without node ports has nodePort %d (%v)", s.Spec.Ports[0].NodePort, err)
	}
	for _, a := range nonpAddrs {
		reach(f, a, "endpoint=nonp-n2")
		f.Owner(a)
	}

	// ClusterIP first, then LoadBalancer, then ClusterIP again.
	typed := f.Service("typed", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Annotations = map[string]string{v1alpha1.AnnotationPool: "basic"}
	})
	f.Endpoint(typed, "typed-n1", 1)
	setType := func(typ corev1.ServiceType) {
		t.Helper()
		s, err := f.Client.CoreV1().Services(typed.Namespace).Get(f.Ctx, typed.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Type = typ
		if _, err := f.Client.CoreV1().Services(typed.Namespace).Update(f.Ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("make %s a %s: %v", typed, typ, err)
		}
	}
	setType(corev1.ServiceTypeLoadBalancer)
	typedAddrs, err := f.WaitIngress(f.Ctx, typed, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	announced(f, typed, typedAddrs)
	reach(f, typedAddrs[0], "endpoint=typed-n1")
	setType(corev1.ServiceTypeClusterIP)
	f.Eventually(fmt.Sprintf("no node answers %s once %s is a ClusterIP Service", typedAddrs[0], typed), 50, 200*time.Millisecond, func() error {
		if n := f.Owner(typedAddrs[0]); n != 0 {
			return fmt.Errorf("node%d answers", n)
		}
		return nil
	})

	// The owner counted its replies.
	metrics, err := f.SpeakerMetrics(owners[addrs[0]])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, `ironlb_speaker_l2_replies_total{interface="eth0",protocol="arp"}`) ||
		!strings.Contains(metrics, "ironlb_speaker_addresses_owned") || !strings.Contains(metrics, "ironlb_speaker_peers_alive 2") {
		t.Errorf("owner's metrics lack replies, owned addresses or 2 live peers:\n%s", grep(metrics, "ironlb_speaker_"))
	}
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLocalTrafficPolicy: with externalTrafficPolicy Local only a node with
// a local endpoint answers; the owner follows the endpoint when it moves;
// traffic always lands on a local endpoint with the client's address kept.
func TestLocalTrafficPolicy(t *testing.T) {
	f := framework.New(t)
	pool(f, "local", 1, nil)
	svc, addrs := service(f, "web", "local", []int{2}, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	for i, a := range addrs {
		f.WaitOwner(a, "node2", func(n int) bool { return n == 2 })
		body := reach(f, a, "endpoint=web-n2 node=node2")
		if !strings.Contains(body, "client="+f.ClientAddrs()[i].String()) {
			t.Errorf("%s: the client's address was not kept: %q", a, body)
		}
	}
	if owners := announced(f, svc, addrs); owners[addrs[0]] != 2 || owners[addrs[1]] != 2 {
		t.Fatalf("condition names %v, want node2", owners)
	}
	if err := f.MoveEndpoint(f.Ctx, "web-n2", 3); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.WaitOwner(a, "node3", func(n int) bool { return n == 3 })
		reach(f, a, "endpoint=web-n2 node=node3")
		for i := 0; i < 5; i++ {
			if body := reach(f, a, "endpoint="); !strings.Contains(body, "node=node3") {
				t.Fatalf("traffic to %s left node3: %q", a, body)
			}
		}
	}
}

// failover takes the owner of the Service's addresses away with stop,
// checks that traffic resumes through another node with one answer only,
// brings it back with restore, and checks that addresses the owner never
// held did not move.
func failover(t *testing.T, slot int, stop, restore func(f *framework.F, n int) error) {
	f := framework.New(t)
	pool(f, "failover", slot, nil)
	_, addrs := service(f, "web", "failover", []int{1, 2, 3}, nil)
	// More addresses, to see that those of other nodes stay put.
	others := map[netip.Addr]int{}
	for i := 0; i < 3; i++ {
		_, more := service(f, fmt.Sprintf("more%d", i), "failover", nil, nil)
		for _, a := range more {
			others[a] = f.WaitOwner(a, "a node", func(int) bool { return true })
		}
	}
	victim := f.WaitOwner(addrs[0], "a node", func(int) bool { return true })
	reach(f, addrs[0], "endpoint=")
	f.Cleanup(func(ctx context.Context) { _ = restore(f, victim) })
	if err := stop(f, victim); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.WaitOwner(a, "a node other than node"+fmt.Sprint(victim), func(n int) bool { return n != victim })
		reach(f, a, "endpoint=")
	}
	if err := restore(f, victim); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.WaitOwner(a, "a node", func(int) bool { return true })
		reach(f, a, "endpoint=")
	}
	for a, owner := range others {
		if owner == victim {
			continue
		}
		if now := f.Owner(a); now != owner {
			t.Errorf("%s moved from node%d to node%d although node%d never held it", a, owner, now, owner)
		}
	}
}

func TestFailoverNodeDies(t *testing.T) {
	failover(t, 2,
		func(f *framework.F, n int) error { return f.NodeDown(f.Ctx, n) },
		func(f *framework.F, n int) error { return f.NodeUp(f.Ctx, n) })
}

func TestFailoverSpeakerKilled(t *testing.T) {
	failover(t, 3,
		func(f *framework.F, n int) error { return f.Kill(f.SpeakerName(n)) },
		func(f *framework.F, n int) error { return f.Restart(f.SpeakerName(n)) })
}

func TestFailoverSpeakerStopped(t *testing.T) {
	failover(t, 4,
		func(f *framework.F, n int) error { return f.Stop(f.SpeakerName(n), 10*time.Second) },
		func(f *framework.F, n int) error { return f.Restart(f.SpeakerName(n)) })
}

// TestInterfaceDown: the owner's answering interface goes down while the
// node stays up; the address moves.
func TestInterfaceDown(t *testing.T) {
	failover(t, 5,
		func(f *framework.F, n int) error { return f.SetNodeInterface(f.Ctx, n, false) },
		func(f *framework.F, n int) error { return f.SetNodeInterface(f.Ctx, n, true) })
}

// TestNodeSelectionAndExclusion: a pool's l2.nodeSelector and the
// exclusion label decide who may answer; with nobody left the condition says
// why.
func TestNodeSelectionAndExclusion(t *testing.T) {
	f := framework.New(t)
	label := func(n int, key, value string, set bool) {
		t.Helper()
		node, err := f.Client.CoreV1().Nodes().Get(f.Ctx, f.NodeName(n), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if set {
			node.Labels[key] = value
		} else {
			delete(node.Labels, key)
		}
		if _, err := f.Client.CoreV1().Nodes().Update(f.Ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const chosen = "e2e.ironlb.io/l2"
	for _, n := range []int{1, 3} {
		label(n, chosen, "yes", true)
		f.Cleanup(func(context.Context) { label(n, chosen, "", false) })
	}
	f.Cleanup(func(context.Context) { label(3, lab.ExcludeLabel, "", false) })
	pool(f, "selected", 6, &v1alpha1.L2Advertisement{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{chosen: "yes"}}})
	svc, addrs := service(f, "web", "selected", []int{2}, nil)
	for _, a := range addrs {
		f.WaitOwner(a, "node1 or node3", func(n int) bool { return n == 1 || n == 3 })
		reach(f, a, "endpoint=web-n2")
	}
	label(3, lab.ExcludeLabel, "", true)
	for _, a := range addrs {
		f.WaitOwner(a, "node1", func(n int) bool { return n == 1 })
	}
	label(1, chosen, "", false)
	s, err := f.WaitCondition(f.Ctx, svc, v1alpha1.ConditionAnnounced, metav1.ConditionFalse, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := conditionMessage(s)
	for _, want := range []string{"NoEligibleNode", "node1: not selected", "node2: not selected", "node3: labelled " + lab.ExcludeLabel} {
		if !strings.Contains(msg, want) {
			t.Errorf("condition %q does not say %q", msg, want)
		}
	}
	for _, a := range addrs {
		f.Eventually("nobody answers "+a.String(), 30, 200*time.Millisecond, func() error {
			if n := f.Owner(a); n != 0 {
				return fmt.Errorf("node%d answers", n)
			}
			return nil
		})
	}
}

func conditionMessage(s *corev1.Service) string {
	for _, c := range s.Status.Conditions {
		if c.Type == v1alpha1.ConditionAnnounced {
			return c.Reason + ": " + c.Message
		}
	}
	return ""
}

// TestMissingInterface: a pool names an interface no node has; nobody
// answers, the condition says so and every speaker sends AnnounceFailed.
func TestMissingInterface(t *testing.T) {
	f := framework.New(t)
	pool(f, "missing", 7, &v1alpha1.L2Advertisement{Interfaces: []string{"eth9"}})
	svc, addrs := service(f, "web", "missing", []int{1}, nil)
	s, err := f.WaitCondition(f.Ctx, svc, v1alpha1.ConditionAnnounced, metav1.ConditionFalse, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg := conditionMessage(s); !strings.Contains(msg, "[eth9]") {
		t.Errorf("condition %q does not name the missing interface", msg)
	}
	f.Eventually("AnnounceFailed from every node", 50, 200*time.Millisecond, func() error {
		events, err := f.Client.CoreV1().Events(svc.Namespace).List(f.Ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + svc.Name + ",reason=AnnounceFailed"})
		if err != nil {
			return err
		}
		hosts := map[string]bool{}
		for _, e := range events.Items {
			hosts[e.Source.Host] = true
		}
		if len(hosts) < f.Nodes {
			return fmt.Errorf("AnnounceFailed from %v", hosts)
		}
		return nil
	})
	for _, a := range addrs {
		if n := f.Owner(a); n != 0 {
			t.Errorf("node%d answers %s without the pool's interface", n, a)
		}
	}
}

// TestPoolShrunkThenDeletedKeepsServing: the addresses of a Service leave
// its pool, and then the pool is deleted; the Service keeps them, and the
// same node keeps answering for them, with the pool's settings, all along.
// The pool stays, being deleted, until the Service goes.
func TestPoolShrunkThenDeletedKeepsServing(t *testing.T) {
	f := framework.New(t)
	pool(f, "shrinking", 1, nil)
	svc, addrs := service(f, "web", "shrinking", []int{1, 2}, nil)
	owners := announced(f, svc, addrs)
	for _, a := range addrs {
		reach(f, a, "endpoint=web-n")
	}
	stillServed := func(when string) {
		t.Helper()
		f.Eventually(fmt.Sprintf("the Announced condition of %s says its addresses are in no pool %s", svc, when), 50, 200*time.Millisecond, func() error {
			s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if c := findAnnounced(s); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "AddressNotInPool" {
				return fmt.Errorf("condition %+v", c)
			}
			if got := ingressAddrs(s); !slices.Equal(got, addrs) {
				return fmt.Errorf("the Service holds %v, not %v any more", got, addrs)
			}
			return nil
		})
		for _, a := range addrs {
			reach(f, a, "endpoint=web-n")
			if n := f.Owner(a); n != owners[a] {
				t.Errorf("%s %s: answered by node%d, want node%d as before", a, when, n, owners[a])
			}
		}
	}

	// Shrink the pool to one address of each family that the Service does
	// not hold.
	var rest []any
	for i, p := range f.L2TestPool(1) {
		other := p.Addr()
		if other == addrs[i] {
			other = other.Next()
		}
		rest = append(rest, other.String()+"-"+other.String())
	}
	pools := f.Dynamic.Resource(v1alpha1.IPPoolResource)
	u, err := pools.Get(f.Ctx, "shrinking", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(u.Object, rest, "spec", "addresses"); err != nil {
		t.Fatal(err)
	}
	if _, err := pools.Update(f.Ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("shrink IPPool shrinking: %v", err)
	}
	stillServed("after the pool shrank")

	if err := pools.Delete(f.Ctx, "shrinking", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err = pools.Get(f.Ctx, "shrinking", metav1.GetOptions{})
	if err != nil || u.GetDeletionTimestamp() == nil || !slices.Contains(u.GetFinalizers(), v1alpha1.PoolProtectionFinalizer) {
		t.Fatalf("IPPool shrinking after delete: %v, finalizers %v; want it kept, being deleted", err, u.GetFinalizers())
	}
	stillServed("after the pool was deleted")

	// The Service goes before the test ends: its endpoints first, which the
	// framework would otherwise remove from a Service that is no longer there.
	for _, e := range f.Endpoints(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}) {
		if err := f.RemoveEndpoint(f.Ctx, e.Name); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Client.CoreV1().Services(svc.Namespace).Delete(f.Ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Eventually("IPPool shrinking to go with its last Service", 50, 200*time.Millisecond, func() error {
		if _, err := pools.Get(f.Ctx, "shrinking", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("get: %v", err)
		}
		return nil
	})
}

// TestAnotherControllersAddressIsNotAnswered: a second load-balancer
// controller (a migration, two implementations of one class) writes into the
// status of a Service that ironlb handles a free address of ironlb's own pool.
// ironlb-ccm stands back (ConflictingController) and keeps its record of the
// address it allocated; the speakers answer neither: not the other
// controller's address, although it lies in an ironlb pool, since ironlb did
// not allocate it, and not ironlb's, which the status no longer holds. The
// Announced condition says why.
func TestAnotherControllersAddressIsNotAnswered(t *testing.T) {
	f := framework.New(t)
	pool(f, "contested", 6, nil)
	svc, addrs := service(f, "contested", "contested", []int{1, 2}, nil)
	announced(f, svc, addrs)
	reach(f, addrs[0], "endpoint=contested-n")

	// A free address of the same pool, written with a forced server-side
	// apply under another field manager.
	other := addrs[0].Next()
	ac := corev1ac.Service(svc.Name, svc.Namespace).WithStatus(corev1ac.ServiceStatus().WithLoadBalancer(corev1ac.LoadBalancerStatus().
		WithIngress(corev1ac.LoadBalancerIngress().WithIP(other.String()).WithIPMode(corev1.LoadBalancerIPModeVIP))))
	if _, err := f.Client.CoreV1().Services(svc.Namespace).ApplyStatus(f.Ctx, ac, metav1.ApplyOptions{FieldManager: "other-lb.example.com", Force: true}); err != nil {
		t.Fatalf("write %s into the status as another controller: %v", other, err)
	}
	f.Eventually(fmt.Sprintf("%s says another controller writes its status, and that %s is not ironlb's", svc, other), 100, 200*time.Millisecond, func() error {
		s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var allocated *metav1.Condition
		for i := range s.Status.Conditions {
			if s.Status.Conditions[i].Type == v1alpha1.ConditionIPAllocated {
				allocated = &s.Status.Conditions[i]
			}
		}
		if allocated == nil || allocated.Reason != "ConflictingController" || !strings.Contains(allocated.Message, "other-lb.example.com") {
			return fmt.Errorf("IPAllocated %+v", allocated)
		}
		if got := ingressAddrs(s); !slices.Equal(got, []netip.Addr{other}) {
			return fmt.Errorf("ironlb wrote the status again: %v", got)
		}
		if c := findAnnounced(s); c == nil || !strings.Contains(c.Message, other.String()+" is not an address ironlb-ccm allocated") {
			return fmt.Errorf("Announced %+v", c)
		}
		return nil
	})
	// Nobody answers either address, asked again and again: not a first
	// lucky silence.
	for i := 0; i < 6; i++ {
		for _, a := range []netip.Addr{other, addrs[0]} {
			if n := f.Owner(a); n != 0 {
				t.Fatalf("%s is answered by node%d while another controller holds the status of %s", a, n, svc)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ingressAddrs are the addresses in a Service's status.
func ingressAddrs(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}
