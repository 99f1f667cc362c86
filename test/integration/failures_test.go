package integration

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Every bad request gets a Warning event and a False condition that names the problem, and no
// other Service loses anything.
func TestBadInputIsReportedOnTheServiceAndDisturbsNoOne(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.120.0/30"))
	manual := spec("172.31.121.0/30")
	manual.AutoAssign = ptr(false)
	e.pool("manual", manual)
	e.startCCM("ccm")

	e.service("holder", withAnnotation(v1alpha1.AnnotationIPs, "172.31.120.1"), withAnnotation(v1alpha1.AnnotationSharingKey, "k"), withPorts(tcp(80)))
	e.waitIPs("holder", "172.31.120.1")

	cases := []struct {
		name, reason string
		mention      []string
		opts         []svcOpt
	}{
		{"outside", "NotInPool", []string{"172.31.199.1"}, []svcOpt{withAnnotation(v1alpha1.AnnotationIPs, "172.31.199.1")}},
		{"taken", "AddressInUse", []string{"172.31.120.1", "default/holder"}, []svcOpt{withAnnotation(v1alpha1.AnnotationIPs, "172.31.120.1")}},
		{"wrong-family", "WrongFamily", []string{"fd31::1"}, []svcOpt{withAnnotation(v1alpha1.AnnotationIPs, "fd31::1"),
			withPolicy(v1.IPFamilyPolicySingleStack, v1.IPv4Protocol)}},
		{"malformed", "InvalidRequest", []string{v1alpha1.AnnotationIPs, "not-an-ip"}, []svcOpt{withAnnotation(v1alpha1.AnnotationIPs, "not-an-ip")}},
		{"malformed-internal", "InvalidRequest", []string{v1alpha1.AnnotationInternal}, []svcOpt{withAnnotation(v1alpha1.AnnotationInternal, "maybe")}},
		{"unknown-pool", "UnknownPool", []string{"nope"}, []svcOpt{withAnnotation(v1alpha1.AnnotationPool, "nope")}},
		{"clash", "SharingConflict", []string{"80", "holder"}, []svcOpt{withAnnotation(v1alpha1.AnnotationSharingKey, "k"), withPorts(tcp(80))}},
		{"internal", "NoInternalPool", nil, []svcOpt{withAnnotation(v1alpha1.AnnotationInternal, "true")}},
		{"dual", "DualStackUnavailable", nil, []svcOpt{withPolicy(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol)}},
	}
	for _, c := range cases {
		e.service(c.name, c.opts...)
	}
	// Exhaust the manual pool (4 addresses), then ask for one more.
	for _, n := range []string{"m1", "m2", "m3", "m4"} {
		e.service(n, withAnnotation(v1alpha1.AnnotationPool, "manual"))
		e.waitAllocated(n, 1)
	}
	e.service("exhausted", withAnnotation(v1alpha1.AnnotationPool, "manual"))
	cases = append(cases, struct {
		name, reason string
		mention      []string
		opts         []svcOpt
	}{"exhausted", "PoolExhausted", []string{"manual"}, nil})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cond := e.waitFailed(c.name, c.reason)
			for _, m := range c.mention {
				if !strings.Contains(cond.Message, m) {
					t.Errorf("condition message %q does not mention %q", cond.Message, m)
				}
			}
			msg := e.waitEvent(c.name, "AllocationFailed")
			if !strings.Contains(msg, c.reason) {
				t.Errorf("AllocationFailed event %q does not give the reason %s", msg, c.reason)
			}
			for _, ev := range e.events("default", c.name) {
				if ev.Reason == "AllocationFailed" && ev.Type != v1.EventTypeWarning {
					t.Errorf("AllocationFailed is a %s event, want Warning", ev.Type)
				}
			}
			if got := ingressIPs(e.get(c.name)); len(got) > 0 {
				t.Errorf("failed Service shows addresses %v", got)
			}
		})
	}
	if got := ingressIPs(e.get("holder")); strings.Join(got, ",") != "172.31.120.1" {
		t.Errorf("holder's addresses changed to %v", got)
	}

	// A Service that already has an address keeps it when its own new request is bad.
	taken := ingressIPs(e.get("m2"))[0]
	e.update("m1", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationIPs] = taken })
	cond := e.waitFailed("m1", "AddressInUse")
	m1 := e.get("m1")
	if len(ingressIPs(m1)) != 1 || !strings.Contains(cond.Message, ingressIPs(m1)[0]) {
		t.Errorf("m1 lost its address after a bad request: ingress %v, condition %s", ingressIPs(m1), condString(cond))
	}
	// Fixing the request clears the condition.
	e.update("m1", func(s *v1.Service) { delete(s.Annotations, v1alpha1.AnnotationIPs) })
	e.waitAllocated("m1", 1)
}

func TestDeletedOrShrunkPoolNeverMovesAService(t *testing.T) {
	e := newEnv(t)
	e.pool("old", spec("172.31.122.0/29"))
	spare := spec("172.31.123.0/29")
	spare.AutoAssign = ptr(false)
	e.pool("spare", spare)
	e.startCCM("ccm")
	e.service("a")
	e.service("b", withAnnotation(v1alpha1.AnnotationIPs, "172.31.122.7"))
	ipA := ingressIPs(e.waitAllocated("a", 1))[0]
	e.waitIPs("b", "172.31.122.7")

	// Shrink "old" so that b's address leaves it, then delete it altogether.
	e.updatePool("old", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.122.0/30"} })
	e.eventually("b to be warned", func() (bool, string) {
		c := allocated(e.get("b"))
		return c != nil && c.Reason == "AddressNotInPool" && strings.Contains(c.Message, "172.31.122.7"), condString(c)
	})
	e.waitEvent("b", "AddressNotInPool")
	e.deletePool("old")
	e.eventually("a to be warned", func() (bool, string) {
		c := allocated(e.get("a"))
		return c != nil && c.Reason == "AddressNotInPool", condString(c)
	})
	e.settle("marker", withAnnotation(v1alpha1.AnnotationPool, "spare"))
	if got := ingressIPs(e.get("a")); len(got) != 1 || got[0] != ipA {
		t.Errorf("a moved from %s to %v after its pool was deleted", ipA, got)
	}
	if got := ingressIPs(e.get("b")); len(got) != 1 || got[0] != "172.31.122.7" {
		t.Errorf("b moved to %v after its pool shrank", got)
	}
	// Nobody else is handed the orphaned address.
	e.pool("old-again", spec("172.31.122.0/29"))
	e.service("c", withAnnotation(v1alpha1.AnnotationIPs, ipA))
	e.waitFailed("c", "AddressInUse")
	// With the pool back, the warning goes away.
	e.eventually("a's warning to clear", func() (bool, string) {
		c := allocated(e.get("a"))
		return c != nil && c.Reason == "Allocated" && strings.Contains(c.Message, "old-again"), condString(c)
	})
}

func TestOverlappingPoolsGetAConflictAndNoAddressIsHandedOutTwice(t *testing.T) {
	e := newEnv(t)
	e.pool("first", spec("172.31.124.0/30"))
	e.startCCM("ccm")
	// Created after "first", so "second" is the one in conflict.
	e.pool("second", spec("172.31.124.2-172.31.124.9"))
	e.eventually("second to be in conflict", func() (bool, string) {
		p := e.getPool("second")
		for _, c := range p.Status.Conditions {
			if c.Type == v1alpha1.PoolConditionConflict && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "first") {
				return true, ""
			}
		}
		return false, "no Conflict condition naming first"
	})
	e.eventually("first to be ready", func() (bool, string) {
		for _, c := range e.getPool("first").Status.Conditions {
			if c.Type == v1alpha1.PoolConditionReady && c.Status == metav1.ConditionTrue {
				return true, ""
			}
		}
		return false, "first not Ready"
	})
	seen := map[string]string{}
	for _, n := range []string{"s1", "s2", "s3", "s4", "s5"} {
		e.service(n)
	}
	for _, n := range []string{"s1", "s2", "s3", "s4"} {
		ip := ingressIPs(e.waitAllocated(n, 1))[0]
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s both got %s", n, other, ip)
		}
		seen[ip] = n
		inRange(t, ip, "172.31.124.0/30")
	}
	e.waitFailed("s5", "PoolExhausted")
}
