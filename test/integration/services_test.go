package integration

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

func spec(addrs ...string) v1alpha1.IPPoolSpec {
	s := v1alpha1.IPPoolSpec{}
	for _, a := range addrs {
		s.Addresses = append(s.Addresses, v1alpha1.AddressRange(a))
	}
	return s
}

func inRange(t *testing.T, ip, cidr string) {
	t.Helper()
	if !netip.MustParsePrefix(cidr).Contains(netip.MustParseAddr(ip)) {
		t.Fatalf("address %s is not in %s", ip, cidr)
	}
}

func TestClasslessAndOwnClassServicesAreServedAlikeAndForeignClassIsUntouched(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.100.0/28"))
	e.startCCM("ccm")

	e.service("classless", withPorts(tcp(80), udp(53)))
	e.service("classed", withClass(v1alpha1.DefaultLoadBalancerClass), withPorts(tcp(80), udp(53)))
	e.service("foreign", withClass("example.com/other"))
	e.service("nodeports-off", func(s *v1.Service) { s.Spec.AllocateLoadBalancerNodePorts = ptr(false) })

	for _, key := range []string{"classless", "classed", "nodeports-off"} {
		svc := e.waitAllocated(key, 1)
		ing := svc.Status.LoadBalancer.Ingress[0]
		inRange(t, ing.IP, "172.31.100.0/28")
		if ing.IPMode == nil || *ing.IPMode != v1.LoadBalancerIPModeVIP {
			t.Errorf("%s: ipMode = %v, want VIP", key, ing.IPMode)
		}
		if got := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]; got != "public" {
			t.Errorf("%s: %s = %q, want public", key, v1alpha1.AnnotationAllocatedFrom, got)
		}
		if !slices.Contains(svc.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer) {
			t.Errorf("%s: finalizers %v lack %s", key, svc.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer)
		}
		c := allocated(svc)
		if c.Reason != "Allocated" || !strings.Contains(c.Message, ing.IP) || !strings.Contains(c.Message, "public") {
			t.Errorf("%s: condition %s", key, condString(c))
		}
		if msg := e.waitEvent(key, "IPAllocated"); !strings.Contains(msg, ing.IP) {
			t.Errorf("%s: IPAllocated event %q does not name %s", key, msg, ing.IP)
		}
	}
	// Both paths write the same things: ports per ingress, same shape.
	classless, classed := e.get("classless"), e.get("classed")
	if len(classless.Status.LoadBalancer.Ingress[0].Ports) != 2 || len(classed.Status.LoadBalancer.Ingress[0].Ports) != 2 {
		t.Errorf("ingress ports: classless %v, classed %v; want TCP/80 and UDP/53 on both",
			classless.Status.LoadBalancer.Ingress[0].Ports, classed.Status.LoadBalancer.Ingress[0].Ports)
	}
	if classless.Status.LoadBalancer.Ingress[0].IP == classed.Status.LoadBalancer.Ingress[0].IP {
		t.Errorf("two Services without a sharing key got the same address %s", classed.Status.LoadBalancer.Ingress[0].IP)
	}

	e.settle("marker")
	foreign := e.get("foreign")
	if len(foreign.Status.LoadBalancer.Ingress) > 0 || len(foreign.Finalizers) > 0 || len(foreign.Annotations) > 0 || len(foreign.Status.Conditions) > 0 {
		t.Errorf("Service of another class was touched: ingress %v, finalizers %v, annotations %v, conditions %v",
			foreign.Status.LoadBalancer.Ingress, foreign.Finalizers, foreign.Annotations, foreign.Status.Conditions)
	}
	if evs := e.events("default", "foreign"); len(evs) > 0 {
		t.Errorf("Service of another class got events: %v", eventReasons(evs))
	}

	// The pool's status counts what is handed out.
	e.eventually("pool status", func() (bool, string) {
		p := e.getPool("public")
		if p.Status.IPv4 == nil {
			return false, "no IPv4 status"
		}
		return p.Status.IPv4.Allocated == "4" && p.Status.IPv4.Capacity == "16" && p.Status.IPv4.Available == "12",
			p.Status.IPv4.Allocated + "/" + p.Status.IPv4.Capacity
	})
}

func TestHandleClasslessOffLeavesClasslessServicesAlone(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.101.0/28"))
	e.startCCM("ccm", "--handle-classless=false", "--load-balancer-class=example.com/ironlb")
	e.service("classless")
	e.service("default-class", withClass(v1alpha1.DefaultLoadBalancerClass))
	e.settle("mine", withClass("example.com/ironlb"))
	for _, key := range []string{"classless", "default-class"} {
		if svc := e.get(key); len(svc.Status.LoadBalancer.Ingress) > 0 || len(svc.Finalizers) > 0 || len(svc.Status.Conditions) > 0 {
			t.Errorf("%s was touched: %v %v %v", key, svc.Status.LoadBalancer.Ingress, svc.Finalizers, svc.Status.Conditions)
		}
	}
}

func TestTypeChangeAndDeletionReleaseTheAddressAndFinalizer(t *testing.T) {
	e := newEnv(t)
	e.pool("tiny", spec("172.31.102.10-172.31.102.11"))
	e.startCCM("ccm")
	e.waitAllocated(e.service("a").Name, 1)
	e.waitAllocated(e.service("b").Name, 1)
	e.service("waiting")
	cond := e.waitFailed("waiting", "PoolExhausted")
	if !strings.Contains(cond.Message, "tiny") {
		t.Errorf("exhaustion message %q does not name the pool", cond.Message)
	}
	e.waitEvent("waiting", "AllocationFailed")

	// Type change away from LoadBalancer releases, clears status, drops finalizer and annotation.
	addrA := ingressIPs(e.get("a"))[0]
	e.update("a", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeClusterIP
		s.Spec.AllocateLoadBalancerNodePorts = nil
		for i := range s.Spec.Ports {
			s.Spec.Ports[i].NodePort = 0
		}
	})
	e.eventually("a to be cleaned up", func() (bool, string) {
		svc := e.get("a")
		_, ann := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
		return len(svc.Status.LoadBalancer.Ingress) == 0 && len(svc.Finalizers) == 0 && !ann && allocated(svc) == nil,
			condString(allocated(svc))
	})
	if msg := e.waitEvent("a", "IPReleased"); !strings.Contains(msg, addrA) {
		t.Errorf("IPReleased %q does not name %s", msg, addrA)
	}
	// The waiting Service gets the freed address.
	e.waitIPs("waiting", addrA)

	// Deletion releases and the Service really goes away (no finalizer left behind).
	addrB := ingressIPs(e.get("b"))[0]
	e.delete("b")
	e.eventually("b to be gone", func() (bool, string) {
		_, err := e.client.CoreV1().Services("default").Get(e.ctx, "b", metav1.GetOptions{})
		return err != nil, "still there"
	})
	e.service("next")
	e.waitIPs("next", addrB)

	// A manifest may list the cleanup finalizer itself; deleting that Service still completes.
	e.delete("next")
	e.service("listed", func(s *v1.Service) { s.Finalizers = []string{v1alpha1.LoadBalancerCleanupFinalizer} })
	e.waitIPs("listed", addrB)
	e.delete("listed")
	e.eventually("listed to be gone", func() (bool, string) {
		_, err := e.client.CoreV1().Services("default").Get(e.ctx, "listed", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
}

func TestInternalServicesUseInternalPools(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.103.0/28"))
	internal := spec("172.31.104.0/28")
	internal.Visibility = v1alpha1.VisibilityInternal
	e.pool("private", internal)
	e.startCCM("ccm")

	cases := map[string]svcOpt{
		"ironlb": withAnnotation(v1alpha1.AnnotationInternal, "true"),
		"aws":    withAnnotation("service.beta.kubernetes.io/aws-load-balancer-internal", "true"),
		"gke":    withAnnotation("networking.gke.io/load-balancer-type", "Internal"),
		"azure":  withAnnotation("service.beta.kubernetes.io/azure-load-balancer-internal", "true"),
		"qcloud": withAnnotation("service.kubernetes.io/qcloud-loadbalancer-internal-subnetid", "subnet-12345"),
	}
	for name, opt := range cases {
		e.service(name, opt)
	}
	e.service("external-aws", withAnnotation("service.beta.kubernetes.io/aws-load-balancer-internal", "false"))
	e.service("plain")
	for name := range cases {
		inRange(t, e.waitAllocated(name, 1).Status.LoadBalancer.Ingress[0].IP, "172.31.104.0/28")
	}
	inRange(t, e.waitAllocated("external-aws", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.103.0/28")
	inRange(t, e.waitAllocated("plain", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.103.0/28")
}

func TestOtherCloudsInternalAnnotationsCanBeTurnedOff(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.105.0/28"))
	internal := spec("172.31.106.0/28")
	internal.Visibility = v1alpha1.VisibilityInternal
	e.pool("private", internal)
	e.startCCM("ccm", "--other-clouds-internal-annotations=false")
	e.service("aws", withAnnotation("service.beta.kubernetes.io/aws-load-balancer-internal", "true"))
	e.service("own", withAnnotation(v1alpha1.AnnotationInternal, "true"))
	inRange(t, e.waitAllocated("aws", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.105.0/28")
	inRange(t, e.waitAllocated("own", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.106.0/28")
}

func TestDualStackPolicies(t *testing.T) {
	e := newEnv(t)
	e.pool("dual", spec("172.31.107.0/28", "fd31:0:107::/120"))
	v4only := spec("172.31.108.0/28")
	v4only.AutoAssign = ptr(false)
	e.pool("v4only", v4only)
	e.startCCM("ccm")

	e.service("single-v4", withPolicy(v1.IPFamilyPolicySingleStack, v1.IPv4Protocol))
	e.service("single-v6", withPolicy(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol))
	e.service("prefer-dual", withPolicy(v1.IPFamilyPolicyPreferDualStack, v1.IPv4Protocol, v1.IPv6Protocol))
	e.service("prefer-dual-v6-first", withPolicy(v1.IPFamilyPolicyPreferDualStack, v1.IPv6Protocol, v1.IPv4Protocol))
	e.service("require-dual", withPolicy(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol))
	e.service("prefer-dual-v4-pool", withPolicy(v1.IPFamilyPolicyPreferDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		withAnnotation(v1alpha1.AnnotationPool, "v4only"))
	e.service("require-dual-v4-pool", withPolicy(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		withAnnotation(v1alpha1.AnnotationPool, "v4only"))

	families := func(key string, n int) []string {
		var out []string
		for _, ip := range ingressIPs(e.waitAllocated(key, n)) {
			if netip.MustParseAddr(ip).Is4() {
				out = append(out, "4")
			} else {
				out = append(out, "6")
			}
		}
		return out
	}
	for key, want := range map[string]string{
		"single-v4": "4", "single-v6": "6", "prefer-dual": "4,6", "prefer-dual-v6-first": "6,4",
		"require-dual": "4,6", "prefer-dual-v4-pool": "4",
	} {
		if got := strings.Join(families(key, len(strings.Split(want, ","))), ","); got != want {
			t.Errorf("%s: address families %s, want %s", key, got, want)
		}
	}
	cond := e.waitFailed("require-dual-v4-pool", "DualStackUnavailable")
	if !strings.Contains(cond.Message, "IPv6") {
		t.Errorf("RequireDualStack failure %q does not say which family is missing", cond.Message)
	}
}

func TestSharingKey(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.109.0/28"))
	e.namespace("other", nil)
	e.startCCM("ccm")
	key := withAnnotation(v1alpha1.AnnotationSharingKey, "web")
	e.service("http", key, withPorts(tcp(80)))
	ip := ingressIPs(e.waitAllocated("http", 1))[0]
	e.service("https", key, withPorts(tcp(443), udp(443)))
	e.waitIPs("https", ip)
	e.service("clash", key, withPorts(tcp(443)))
	cond := e.waitFailed("clash", "SharingConflict")
	if !strings.Contains(cond.Message, "443") || !strings.Contains(cond.Message, "https") {
		t.Errorf("sharing conflict %q does not name the port and the Service", cond.Message)
	}
	e.service("other/http", key, withPorts(tcp(80)))
	if got := ingressIPs(e.waitAllocated("other/http", 1))[0]; got == ip {
		t.Errorf("a Service in another namespace shares %s through the same key", ip)
	}
	// The shared address stays until its last holder goes.
	e.delete("http")
	e.service("after", withAnnotation(v1alpha1.AnnotationIPs, ip))
	e.waitFailed("after", "AddressInUse")
	e.delete("https")
	e.waitIPs("after", ip)
}

func TestRequestsAndPoolSelection(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.110.0/28"))
	manual := spec("172.31.111.0/28")
	manual.AutoAssign = ptr(false)
	e.pool("manual", manual)
	team := spec("172.31.112.0/28")
	team.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: 1,
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}
	e.pool("team-a", team)
	buggy := spec("172.31.113.255-172.31.114.1")
	buggy.AvoidBuggyIPs = true
	buggy.AutoAssign = ptr(false)
	e.pool("buggy", buggy)
	e.namespace("team-a", map[string]string{"team": "a"})
	e.startCCM("ccm")

	e.service("by-annotation", withAnnotation(v1alpha1.AnnotationIPs, "172.31.110.7"))
	e.service("by-spec", func(s *v1.Service) { s.Spec.LoadBalancerIP = "172.31.111.9" })
	e.service("by-pool", withAnnotation(v1alpha1.AnnotationPool, "manual"))
	e.service("team-a/app")
	e.service("avoid-buggy", withAnnotation(v1alpha1.AnnotationPool, "buggy"))

	e.waitIPs("by-annotation", "172.31.110.7")
	e.waitIPs("by-spec", "172.31.111.9")
	if msg := e.waitEvent("by-spec", "DeprecatedLoadBalancerIP"); !strings.Contains(msg, v1alpha1.AnnotationIPs) {
		t.Errorf("deprecation warning %q does not point at %s", msg, v1alpha1.AnnotationIPs)
	}
	inRange(t, e.waitAllocated("by-pool", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.111.0/28")
	inRange(t, e.waitAllocated("team-a/app", 1).Status.LoadBalancer.Ingress[0].IP, "172.31.112.0/28")
	e.waitIPs("avoid-buggy", "172.31.114.1")
}
