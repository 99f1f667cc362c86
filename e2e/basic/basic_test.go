// Package basic holds the lab's first end-to-end tests, which need no
// speaker: a Service gets its address from ironlb-ccm (or from the test),
// kube-proxy on the nodes programs it, and a client reaches it through a
// test-only static route.
package basic

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{CCM: true})
}

// pool creates an IPPool from slot i of the lab's routed range that only
// Services naming it use.
func pool(f *framework.F, name string, i int) []netip.Prefix {
	f.T.Helper()
	f.Pool(name, f.TestPool(i), nil)
	return f.TestPool(i)
}

func dualStack(pool string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		policy := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		if pool != "" {
			s.Annotations = map[string]string{v1alpha1.AnnotationPool: pool}
		}
	}
}

// TestAddressFromCCMReachable: ironlb-ccm gives a dual-stack Service one
// address per family from the pool, kube-proxy on node1 programs them, and
// the LAN client and the external client, routed to node1, reach both
// endpoints (on node2 and node3) at both addresses.
func TestAddressFromCCMReachable(t *testing.T) {
	f := framework.New(t)
	prefixes := pool(f, "reachable", 0)
	svc := f.Service("web", dualStack("reachable"))
	f.Endpoint(svc, "web-a", 2)
	f.Endpoint(svc, "web-b", 3)

	addrs, err := f.WaitIngress(f.Ctx, svc, 2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		if !prefixes[i].Contains(a) {
			t.Fatalf("address %s of %s is not from pool prefix %s", a, svc, prefixes[i])
		}
	}
	for _, p := range prefixes {
		f.Route(f.RouterNS(), p, 1)
	}
	for _, ns := range []string{f.ClientNS(), f.ExternalNS()} {
		for _, a := range addrs {
			seen := map[string]bool{}
			f.Eventually(fmt.Sprintf("both endpoints answer %s from %s", a, ns), 60, 100*time.Millisecond, func() error {
				body, err := lab.Curl(f.Ctx, ns, a, 80, "/")
				if err != nil {
					return err
				}
				for _, ep := range []string{"endpoint=web-a node=node2", "endpoint=web-b node=node3"} {
					if strings.Contains(body, ep) {
						seen[ep] = true
					}
				}
				if len(seen) < 2 {
					return fmt.Errorf("answers so far came from %v", seen)
				}
				return nil
			})
		}
	}
}

// TestStatusWrittenByTest: kube-proxy serves an address that the test, not
// ironlb, wrote into the status of a Service of another class; the lab's
// endpoint controls (unready, move, remove) change where traffic lands.
func TestStatusWrittenByTest(t *testing.T) {
	f := framework.New(t)
	vip := netip.MustParsePrefix(f.TestPool(1)[0].Addr().Next().String() + "/32")
	svc := f.Service("manual", func(s *corev1.Service) {
		class := "example.com/not-ironlb"
		s.Spec.LoadBalancerClass = &class
	})
	f.Endpoint(svc, "manual-a", 2)
	f.Endpoint(svc, "manual-b", 3)
	writeIngress(f, svc, vip.Addr())
	f.Route(f.ClientNS(), vip, 1)

	f.Curl(f.ClientNS(), vip.Addr(), "endpoint=manual-", 40)

	// Not ready: kube-proxy sends nothing more to manual-a.
	if err := f.SetEndpointConditions(f.Ctx, "manual-a", false, false, false); err != nil {
		t.Fatal(err)
	}
	onlyFrom(f, vip.Addr(), "endpoint=manual-b node=node3")

	// manual-b moves to node1; traffic follows it there.
	if err := f.MoveEndpoint(f.Ctx, "manual-b", 1); err != nil {
		t.Fatal(err)
	}
	onlyFrom(f, vip.Addr(), "endpoint=manual-b node=node1")

	// No endpoint left: kube-proxy rejects the connection.
	for _, ep := range []string{"manual-a", "manual-b"} {
		if err := f.RemoveEndpoint(f.Ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	// Refused several times in a row: a connection that fails once may be
	// a hiccup while the endpoints are still programmed.
	refused := 0
	f.Eventually("no answer without endpoints, 5 times in a row", 60, 250*time.Millisecond, func() error {
		if body, err := lab.Curl(f.Ctx, f.ClientNS(), vip.Addr(), 80, "/"); err == nil {
			refused = 0
			return fmt.Errorf("still answered: %q", body)
		}
		if refused++; refused < 5 {
			return fmt.Errorf("refused %d times in a row", refused)
		}
		return nil
	})
	// ironlb-ccm left the other class's Service alone.
	s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Finalizers) != 0 || len(s.Status.Conditions) != 0 {
		t.Fatalf("ironlb touched a Service of another class: finalizers %v, conditions %v", s.Finalizers, s.Status.Conditions)
	}
}

func writeIngress(f *framework.F, svc types.NamespacedName, addr netip.Addr) {
	f.T.Helper()
	s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		f.T.Fatal(err)
	}
	vip := corev1.LoadBalancerIPModeVIP
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: addr.String(), IPMode: &vip}}
	if _, err := f.Client.CoreV1().Services(svc.Namespace).UpdateStatus(f.Ctx, s, metav1.UpdateOptions{}); err != nil {
		f.T.Fatal(err)
	}
}

// onlyFrom waits, bounded, until 20 answers in a row come from want: until
// kube-proxy on the route's node has the change, the other endpoint still
// answers about every other time, so a run of 20 (1 in a million by chance)
// says that it answers no more. A first answer from want proves nothing.
func onlyFrom(f *framework.F, addr netip.Addr, want string) {
	f.T.Helper()
	f.CurlSteady(f.ClientNS(), addr, want, 20, 120)
}

// TestNodeDownAndBack: with the only route through node1, node1 dying cuts
// the Service off; when it comes back (link up, kube-proxy restarted) it
// serves again.
func TestNodeDownAndBack(t *testing.T) {
	f := framework.New(t)
	pool(f, "nodedown", 2)
	svc := f.Service("web", dualStack("nodedown"))
	f.Endpoint(svc, "web-a", 2)
	addrs, err := f.WaitIngress(f.Ctx, svc, 2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.Route(f.ClientNS(), framework.Host(a), 1)
		f.Curl(f.ClientNS(), a, "endpoint=web-a", 40)
	}
	f.Cleanup(func(ctx context.Context) { _ = f.NodeUp(ctx, 1) })
	if err := f.NodeDown(f.Ctx, 1); err != nil {
		t.Fatal(err)
	}
	if f.Alive("kube-proxy@node1") {
		t.Fatal("kube-proxy on node1 still runs after the node died")
	}
	for _, a := range addrs {
		if body, err := lab.Curl(f.Ctx, f.ClientNS(), a, 80, "/"); err == nil {
			t.Fatalf("%s answered through a dead node: %q", a, body)
		}
	}
	if err := f.NodeUp(f.Ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.Curl(f.ClientNS(), a, "endpoint=web-a", 40)
	}
}

// TestCCMRestart: a Service created while ironlb-ccm is down waits without
// an address and gets one once it runs again.
func TestCCMRestart(t *testing.T) {
	f := framework.New(t)
	pool(f, "restart", 3)
	if err := f.Kill("ironlb-ccm"); err != nil {
		t.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) {
		if !f.Alive("ironlb-ccm") {
			_ = f.Restart("ironlb-ccm")
		}
	})
	svc := f.Service("web", dualStack("restart"))
	f.Endpoint(svc, "web-a", 3)
	time.Sleep(2 * time.Second)
	s, err := f.Client.CoreV1().Services(svc.Namespace).Get(f.Ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Status.LoadBalancer.Ingress) != 0 {
		t.Fatalf("Service got %v with ironlb-ccm down: who wrote it?", s.Status.LoadBalancer.Ingress)
	}
	if err := f.Restart("ironlb-ccm"); err != nil {
		t.Fatal(err)
	}
	addrs, err := f.WaitIngress(f.Ctx, svc, 2, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.Route(f.ClientNS(), framework.Host(addrs[0]), 2)
	f.Curl(f.ClientNS(), addrs[0], "endpoint=web-a node=node3", 40)
}
