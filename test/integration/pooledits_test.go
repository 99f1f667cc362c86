package integration

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider"
)

// waitFrom waits until the Service's addresses are announced with pool (ironlb.io/allocated-from)
// and its IPAllocated condition has reason, and returns its condition.
func (e *env) waitFrom(key, pool, reason string) *metav1.Condition {
	e.t.Helper()
	var cond *metav1.Condition
	e.eventually(fmt.Sprintf("%s to be announced with pool %s, %s", key, pool, reason), func() (bool, string) {
		svc := e.get(key)
		cond = allocated(svc)
		from := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
		return from == pool && cond != nil && cond.Reason == reason, fmt.Sprintf("allocated-from %q, condition %s", from, condString(cond))
	})
	return cond
}

// waitPool waits until the pool satisfies ok, which says what it saw otherwise.
func (e *env) waitPool(name, what string, ok func(p *v1alpha1.IPPool) (bool, string)) *v1alpha1.IPPool {
	e.t.Helper()
	var p *v1alpha1.IPPool
	e.eventually(fmt.Sprintf("IPPool %s %s", name, what), func() (bool, string) {
		p = e.getPool(name)
		return ok(p)
	})
	return p
}

func (e *env) waitPoolGone(name string) {
	e.t.Helper()
	e.eventually("IPPool "+name+" to be gone", func() (bool, string) {
		_, err := e.dyn.Resource(v1alpha1.IPPoolResource).Get(e.ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return false, fmt.Sprintf("get: %v", err)
	})
}

func protected(p *v1alpha1.IPPool) bool {
	return slices.Contains(p.Finalizers, v1alpha1.PoolProtectionFinalizer)
}

func poolReady(p *v1alpha1.IPPool) *metav1.Condition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == v1alpha1.PoolConditionReady {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// keptAddresses checks that every Service still shows the addresses it had.
func (e *env) keptAddresses(before map[string][]string, after string) {
	e.t.Helper()
	for key, want := range before {
		if got := ingressIPs(e.get(key)); !slices.Equal(got, want) {
			e.t.Errorf("%s holds %v after %s, want %v", key, got, after, want)
		}
	}
}

// Every edit of the pools leaves every address where it is: a range moved to another pool, in
// either order of the two edits, a pool turned internal, a pool split in two, a pool shrunk.
// ironlb.io/allocated-from follows an address to the pool that holds it now.
func TestPoolEditsNeverRenumber(t *testing.T) {
	e := newEnv(t)
	e.pool("a", spec("172.31.160.0/29", "172.31.160.8/29", "172.31.160.16/29"))
	e.pool("b", spec("172.31.161.0/29"))
	e.pool("split", spec("172.31.162.0/28"))
	// Reserved for Services labelled tier=vis, so that one that names no pool takes its address
	// from it, and would take another pool's if it were moved.
	vis := spec("172.31.163.0/29")
	vis.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: 1, ServiceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "vis"}}}
	e.pool("vis", vis)
	e.pool("shrink", spec("172.31.164.0/29"))
	e.startCCM("ccm")

	request := func(ip string) svcOpt { return withAnnotation(v1alpha1.AnnotationIPs, ip) }
	tierVis := func(s *v1.Service) { s.Labels = map[string]string{"tier": "vis"} }
	services := map[string]svcOpt{
		"moved-first":  request("172.31.160.10"), // its range leaves a, then joins b
		"moved-second": request("172.31.160.18"), // its range joins b (in conflict), then leaves a
		"stays":        request("172.31.160.2"),
		"split-low":    request("172.31.162.2"),
		"split-high":   request("172.31.162.12"),
		"vis":          func(s *v1.Service) { tierVis(s); withAnnotation(v1alpha1.AnnotationPool, "vis")(s) },
		"vis-any":      tierVis,
		"shrunk":       request("172.31.164.6"),
	}
	before := map[string][]string{}
	for key, opt := range services {
		e.service(key, opt)
	}
	for key := range services {
		before[key] = ingressIPs(e.waitAllocated(key, 1))
	}

	// A range moved from a to b: removed from a first, added to b then.
	e.updatePool("a", func(p *v1alpha1.IPPool) {
		p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.160.0/29", "172.31.160.16/29"}
	})
	e.waitFrom("moved-first", "a", "AddressNotInPool")
	e.updatePool("b", func(p *v1alpha1.IPPool) {
		p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.161.0/29", "172.31.160.8/29"}
	})
	e.waitFrom("moved-first", "b", "Allocated")

	// And the other way: added to b first, where it overlaps a (b is in conflict), then removed
	// from a.
	e.updatePool("b", func(p *v1alpha1.IPPool) {
		p.Spec.Addresses = append(p.Spec.Addresses, "172.31.160.16/29")
	})
	e.waitPool("b", "to be in conflict", func(p *v1alpha1.IPPool) (bool, string) {
		c := poolReady(p)
		return c != nil && c.Reason == "Conflict", condString(c)
	})
	e.updatePool("a", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.160.0/29"} })
	e.waitFrom("moved-second", "b", "Allocated")
	e.waitFrom("moved-first", "b", "Allocated")
	e.waitFrom("stays", "a", "Allocated")

	// Split: the upper half of "split" becomes a pool of its own.
	e.pool("split-2", spec("172.31.162.8/29"))
	e.updatePool("split", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.162.0/29"} })
	e.waitFrom("split-high", "split-2", "Allocated")
	e.waitFrom("split-low", "split", "Allocated")

	// A pool turned internal keeps its external Services, with a warning, whether they name it
	// or not; it hands out nothing more to external Services.
	e.updatePool("vis", func(p *v1alpha1.IPPool) { p.Spec.Visibility = v1alpha1.VisibilityInternal })
	for _, key := range []string{"vis", "vis-any"} {
		c := e.waitFrom(key, "vis", "AddressNotInPool")
		if !strings.Contains(c.Message, "which serves only internal Services") {
			t.Errorf("%s's condition says %q, want it to say the pool serves only internal Services", key, c.Message)
		}
		e.waitEvent(key, "AddressNotInPool")
	}
	e.service("vis-new", func(s *v1.Service) { tierVis(s); withAnnotation(v1alpha1.AnnotationPool, "vis")(s) })
	e.waitFailed("vis-new", "NoEligiblePool")

	// A shrunk pool keeps its Service, with a warning, still named in allocated-from.
	e.updatePool("shrink", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.164.0/30"} })
	c := e.waitFrom("shrunk", "shrink", "AddressNotInPool")
	if !strings.Contains(c.Message, "172.31.164.6 is no longer in any pool") {
		t.Errorf("shrunk's condition says %q, want it to name its address", c.Message)
	}

	e.settle("marker", withAnnotation(v1alpha1.AnnotationPool, "b"))
	e.keptAddresses(before, "the pool edits")
}

// A pool deleted while Services hold its addresses stays, being deleted, with the finalizer
// ironlb.io/pool-protection, until the last of them is released or its address moves to another
// pool; meanwhile it hands out nothing, its status names the Services, and they keep their
// addresses. A pool nobody uses carries no finalizer and goes at once. ironlb-ccm runs with
// nothing but deploy/default's RBAC.
func TestPoolDeletionWaitsForTheServicesItAnnounces(t *testing.T) {
	e := newEnv(t)
	ccmKubeconfig, _ := e.installDeployIdentities()
	e.pool("old", spec("172.31.165.0/29", "172.31.165.8/29"))
	e.pool("unused", spec("172.31.166.0/29"))
	ccmArgs := []string{"--kubeconfig=" + ccmKubeconfig, "--leader-elect-resource-namespace=" + ironlbNS}
	first := e.startCCM("ccm", ccmArgs...)

	e.service("first", withAnnotation(v1alpha1.AnnotationIPs, "172.31.165.1"))
	e.service("second", withAnnotation(v1alpha1.AnnotationIPs, "172.31.165.12"))
	e.service("named", withAnnotation(v1alpha1.AnnotationPool, "old"))
	before := map[string][]string{}
	for _, key := range []string{"first", "second", "named"} {
		before[key] = ingressIPs(e.waitAllocated(key, 1))
	}
	e.waitPool("old", "to carry the finalizer", func(p *v1alpha1.IPPool) (bool, string) {
		return protected(p), fmt.Sprintf("finalizers %v", p.Finalizers)
	})
	if p := e.getPool("unused"); protected(p) {
		t.Errorf("IPPool unused, which no Service uses, has the finalizers %v", p.Finalizers)
	}
	e.deletePool("unused")
	e.waitPoolGone("unused")

	// "second"'s address leaves the pool before the pool is deleted: it still counts.
	e.updatePool("old", func(p *v1alpha1.IPPool) { p.Spec.Addresses = []v1alpha1.AddressRange{"172.31.165.0/29"} })
	e.waitFrom("second", "old", "AddressNotInPool")
	e.deletePool("old")
	p := e.waitPool("old", "to say which Services keep it", func(p *v1alpha1.IPPool) (bool, string) {
		c := poolReady(p)
		return c != nil && c.Reason == provider.PoolReasonDeleting && strings.Contains(c.Message, "(3: default/first, default/named, default/second)"),
			condString(c)
	})
	if p.DeletionTimestamp == nil || !protected(p) {
		t.Fatalf("IPPool old: deletionTimestamp %v, finalizers %v; want it being deleted and kept", p.DeletionTimestamp, p.Finalizers)
	}
	for _, key := range []string{"first", "named"} {
		c := e.waitFrom(key, "old", "AddressNotInPool")
		if !strings.Contains(c.Message, "which is being deleted") {
			t.Errorf("%s's condition says %q, want it to say its pool is being deleted", key, c.Message)
		}
	}
	e.waitEvent("first", "AddressNotInPool")
	// Nothing new comes from it.
	e.service("late", withAnnotation(v1alpha1.AnnotationPool, "old"))
	e.waitFailed("late", "NoEligiblePool")

	// A new ironlb-ccm knows from the Services which of them keep the pool.
	first.Signal(syscall.SIGKILL)
	e.startCCM("ccm-2", ccmArgs...)
	e.service("after-restart", withAnnotation(v1alpha1.AnnotationIPs, "172.31.165.3"))
	e.waitFailed("after-restart", "NotInPool")
	time.Sleep(2 * time.Second) // status writes follow within half a second
	if p := e.getPool("old"); !protected(p) {
		t.Fatalf("IPPool old lost its finalizer across a restart of ironlb-ccm: %v", p.Finalizers)
	}
	e.keptAddresses(before, "ironlb-ccm restarted")
	e.delete("after-restart")

	// Released: one Service fewer keeps it.
	e.delete("first")
	e.waitPool("old", "to be kept by two Services", func(p *v1alpha1.IPPool) (bool, string) {
		c := poolReady(p)
		return c != nil && strings.Contains(c.Message, "(2: default/named, default/second)"), condString(c)
	})
	delete(before, "first")

	// Moved: a new pool takes over the ranges; a pool being deleted is in conflict with none.
	e.pool("new", spec("172.31.165.0/28"))
	e.waitFrom("second", "new", "Allocated")
	e.waitFrom("named", "new", "AddressNotInPool") // it still names "old"
	e.waitPoolGone("old")
	e.keptAddresses(before, "their pool was deleted")
	e.waitPool("new", "to carry the finalizer", func(p *v1alpha1.IPPool) (bool, string) {
		return protected(p), fmt.Sprintf("finalizers %v", p.Finalizers)
	})

	// The finalizer goes with the last Service, so the pool can go at once then.
	e.delete("second")
	e.delete("named")
	e.delete("late")
	e.waitPool("new", "to lose the finalizer", func(p *v1alpha1.IPPool) (bool, string) {
		return !protected(p), fmt.Sprintf("finalizers %v", p.Finalizers)
	})
	e.deletePool("new")
	e.waitPoolGone("new")
}
