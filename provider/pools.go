package provider

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// poolFor turns an IPPool into what the allocator needs.
func poolFor(p *v1alpha1.IPPool) (ipam.Pool, error) {
	out := ipam.Pool{
		Name:          p.Name,
		Visibility:    ipam.External,
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		CreatedUnix:   p.CreationTimestamp.Unix(),
		Deleting:      p.DeletionTimestamp != nil,
	}
	if p.Spec.Visibility == v1alpha1.VisibilityInternal {
		out.Visibility = ipam.Internal
	}
	for _, a := range p.Spec.Addresses {
		r, err := a.IPRange()
		if err != nil {
			return out, err
		}
		out.Ranges = append(out.Ranges, r)
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		out.Reserved = true
		out.Priority = int(sa.Priority)
		var err error
		if out.NamespaceSelector, err = selector(sa.NamespaceSelector); err != nil {
			return out, fmt.Errorf("serviceAllocation.namespaceSelector: %w", err)
		}
		if out.ServiceSelector, err = selector(sa.ServiceSelector); err != nil {
			return out, fmt.Errorf("serviceAllocation.serviceSelector: %w", err)
		}
	}
	return out, nil
}

func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// poolStatus computes an IPPool's status from the allocator's view. invalid is the reason the
// pool could not be read, if any; users are the Services its settings announce.
func poolStatus(p *v1alpha1.IPPool, st ipam.PoolStatus, known bool, invalid error, users ipam.PoolUsers) v1alpha1.IPPoolStatus {
	out := v1alpha1.IPPoolStatus{ObservedGeneration: p.Generation}
	if known {
		out.IPv4 = familyCount(st, ipam.IPv4)
		out.IPv6 = familyCount(st, ipam.IPv6)
	}
	ready := metav1.Condition{Type: v1alpha1.PoolConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "the pool hands out addresses"}
	conflict := metav1.Condition{Type: v1alpha1.PoolConditionConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap", Message: "the pool overlaps no other pool"}
	switch {
	case p.DeletionTimestamp != nil:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, PoolReasonDeleting, deletingMessage(users)
	case invalid != nil:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "InvalidAddresses", invalid.Error()
	case len(st.ConflictsWith) > 0:
		msg := fmt.Sprintf("the pool overlaps older pools (%s); it hands out no addresses until the overlap is removed", strings.Join(st.ConflictsWith, ", "))
		conflict.Status, conflict.Reason, conflict.Message = metav1.ConditionTrue, "Overlap", msg
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "Conflict", msg
	}
	for _, c := range []metav1.Condition{ready, conflict} {
		c.ObservedGeneration = p.Generation
		out.Conditions = append(out.Conditions, keepTransitionTime(p.Status.Conditions, c))
	}
	return out
}

// PoolReasonDeleting is the reason of the Ready condition of a pool being deleted.
const PoolReasonDeleting = "Deleting"

// deletingMessage says what keeps a pool being deleted: the Services whose addresses its
// settings still announce.
func deletingMessage(users ipam.PoolUsers) string {
	const show = 10
	if users.Count == 0 {
		return "the pool is being deleted and hands out no addresses; no Service's address is announced with it any more"
	}
	names := users.Services
	more := ""
	if len(names) > show {
		more = fmt.Sprintf(" and %d more", len(names)-show)
		names = names[:show]
	}
	return fmt.Sprintf("the pool is being deleted and hands out no addresses; it stays while Services keep addresses it announces (%d: %s%s): "+
		"delete them, have them ask for other addresses, or add their addresses to another pool", users.Count, strings.Join(names, ", "), more)
}

func familyCount(st ipam.PoolStatus, f ipam.Family) *v1alpha1.FamilyCount {
	c, ok := st.Capacity[f]
	if !ok {
		return nil
	}
	return &v1alpha1.FamilyCount{Capacity: c, Allocated: st.Allocated[f], Available: st.Available[f]}
}

// keepTransitionTime carries lastTransitionTime over when a condition's status did not change,
// so that a condition says since when it holds.
func keepTransitionTime(old []metav1.Condition, c metav1.Condition) metav1.Condition {
	for _, o := range old {
		if o.Type == c.Type && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
			return c
		}
	}
	c.LastTransitionTime = metav1.Now()
	return c
}
