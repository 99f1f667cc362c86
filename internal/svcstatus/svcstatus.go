// Package svcstatus reads and writes the parts of a Service's status that both of ironlb's
// binaries share: the addresses in status.loadBalancer and the conditions each of them owns.
package svcstatus

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// Addrs are the addresses in svc's status.loadBalancer, IPv4-mapped IPv6 ones unmapped;
// entries that are not IP addresses (a hostname) are left out.
func Addrs(svc *v1.Service) []netip.Addr { return LoadBalancerAddrs(&svc.Status.LoadBalancer) }

// LoadBalancerAddrs are the addresses of st, as Addrs reads them.
func LoadBalancerAddrs(st *v1.LoadBalancerStatus) []netip.Addr {
	var out []netip.Addr
	for _, ing := range st.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Condition returns svc's condition of type typ, or nil.
func Condition(svc *v1.Service, typ string) *metav1.Condition {
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == typ {
			return &svc.Status.Conditions[i]
		}
	}
	return nil
}

// SameCondition reports whether writing b over a would change what the condition says. The
// transition time does not count: it changes only with the status. Two absent conditions are
// the same.
func SameCondition(a, b *metav1.Condition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
}

// ConditionApply is c for a server-side apply of status.conditions.
func ConditionApply(c metav1.Condition) *metav1ac.ConditionApplyConfiguration {
	return metav1ac.Condition().WithType(c.Type).WithStatus(c.Status).WithReason(c.Reason).
		WithMessage(c.Message).WithObservedGeneration(c.ObservedGeneration).WithLastTransitionTime(c.LastTransitionTime)
}
