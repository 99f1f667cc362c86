package svcstatus

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAddrs_ReadsIPsUnmappedAndSkipsHostnames(t *testing.T) {
	svc := &v1.Service{Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
		{IP: "172.31.10.5"}, {Hostname: "lb.example.com"}, {IP: "::ffff:172.31.10.6"}, {IP: "fd31::5"},
	}}}}
	want := []netip.Addr{netip.MustParseAddr("172.31.10.5"), netip.MustParseAddr("172.31.10.6"), netip.MustParseAddr("fd31::5")}
	if got := Addrs(svc); !slices.Equal(got, want) {
		t.Errorf("Addrs = %v, want %v", got, want)
	}
}

func TestCondition_FindsTheTypeAsked(t *testing.T) {
	svc := &v1.Service{Status: v1.ServiceStatus{Conditions: []metav1.Condition{{Type: "a", Reason: "A"}, {Type: "b", Reason: "B"}}}}
	if c := Condition(svc, "b"); c == nil || c.Reason != "B" {
		t.Errorf("Condition(b) = %+v, want reason B", c)
	}
	if c := Condition(svc, "c"); c != nil {
		t.Errorf("Condition(c) = %+v, want nil", c)
	}
}

func TestSameCondition_IgnoresTransitionTimeOnly(t *testing.T) {
	a := metav1.Condition{Type: "t", Status: metav1.ConditionTrue, Reason: "R", Message: "m", ObservedGeneration: 2, LastTransitionTime: metav1.Unix(1, 0)}
	b := a
	b.LastTransitionTime = metav1.Unix(2, 0)
	if !SameCondition(&a, &b) {
		t.Error("conditions differing only in transition time are not the same")
	}
	for name, change := range map[string]func(*metav1.Condition){
		"status":     func(c *metav1.Condition) { c.Status = metav1.ConditionFalse },
		"reason":     func(c *metav1.Condition) { c.Reason = "Other" },
		"message":    func(c *metav1.Condition) { c.Message = "other" },
		"generation": func(c *metav1.Condition) { c.ObservedGeneration = 3 },
	} {
		c := a
		change(&c)
		if SameCondition(&a, &c) {
			t.Errorf("conditions differing in %s are the same", name)
		}
	}
	if !SameCondition(nil, nil) || SameCondition(&a, nil) || SameCondition(nil, &a) {
		t.Error("absent conditions: only two absent ones are the same")
	}
}
