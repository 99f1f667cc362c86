package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// The finalizer is on a pool exactly while it announces some Service's address; a pool being
// deleted is never given one.
func TestProtectionFor_FinalizerFollowsTheServicesAPoolAnnounces(t *testing.T) {
	for _, tc := range []struct {
		has, deleting bool
		users         int
		want          finalizerChange
	}{
		{has: false, deleting: false, users: 0, want: finalizerKept},
		{has: false, deleting: false, users: 1, want: finalizerAdded},
		{has: true, deleting: false, users: 3, want: finalizerKept},
		{has: true, deleting: false, users: 0, want: finalizerRemoved},
		{has: true, deleting: true, users: 2, want: finalizerKept},
		{has: true, deleting: true, users: 0, want: finalizerRemoved},
		{has: false, deleting: true, users: 2, want: finalizerKept},
		{has: false, deleting: true, users: 0, want: finalizerKept},
	} {
		if got := protectionFor(tc.has, tc.deleting, tc.users); got != tc.want {
			t.Errorf("protectionFor(has %t, deleting %t, users %d) = %d, want %d", tc.has, tc.deleting, tc.users, got, tc.want)
		}
	}
}

// What ironlb-ccm wrote counts until the informer shows it; then the informer does again.
func TestPoolProtection_WrittenChangeCountsUntilTheCacheShowsIt(t *testing.T) {
	pp := poolProtection{written: map[types.UID]bool{}}
	with := []string{"other", v1alpha1.PoolProtectionFinalizer}
	without := []string{"other"}
	steps := []struct {
		what   string
		write  *bool
		cached []string
		want   bool
	}{
		{what: "nothing written: the cache", cached: without, want: false},
		{what: "added, cache lags", write: new(true), cached: without, want: true},
		{what: "cache caught up", cached: with, want: true},
		{what: "someone else removed it", cached: without, want: false},
		{what: "removed by us, cache lags", write: new(false), cached: with, want: false},
		{what: "cache caught up with the removal", cached: without, want: false},
		{what: "someone else put it back", cached: with, want: true},
	}
	for _, s := range steps {
		if s.write != nil {
			pp.written["uid"] = *s.write
		}
		if got := pp.has("uid", s.cached); got != s.want {
			t.Errorf("%s: has = %t, want %t", s.what, got, s.want)
		}
	}
}

// A pool being deleted says so in its Ready condition, and which Services keep it.
func TestPoolStatus_DeletingPoolNamesTheServicesThatKeepIt(t *testing.T) {
	p := testPool("old", "172.31.10.0/28")
	p.DeletionTimestamp = &metav1.Time{}
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("default/s%02d", i))
	}
	got := poolStatus(p, ipam.PoolStatus{}, true, nil, ipam.PoolUsers{Count: 12, Services: names})
	ready := testPoolCondition(t, got, v1alpha1.PoolConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != PoolReasonDeleting ||
		!strings.Contains(ready.Message, "(12: default/s00, default/s01") || !strings.Contains(ready.Message, "default/s09 and 2 more)") ||
		strings.Contains(ready.Message, "default/s10") {
		t.Errorf("Ready = %+v, want False/Deleting naming the first 10 of 12 Services", ready)
	}

	got = poolStatus(p, ipam.PoolStatus{}, true, errors.New("bad"), ipam.PoolUsers{})
	ready = testPoolCondition(t, got, v1alpha1.PoolConditionReady)
	if ready.Reason != PoolReasonDeleting || !strings.Contains(ready.Message, "no Service's address is announced with it") {
		t.Errorf("Ready = %+v, want Deleting with no Service left", ready)
	}
}

func TestPoolGoing_DecidedFromAFreshRead(t *testing.T) {
	pool := func(uid types.UID, deleting bool) *unstructured.Unstructured {
		p := &unstructured.Unstructured{}
		p.SetName("public")
		p.SetUID(uid)
		if deleting {
			now := metav1.Now()
			p.SetDeletionTimestamp(&now)
		}
		return p
	}
	notFound := apierrors.NewNotFound(v1alpha1.IPPoolResource.GroupResource(), "public")
	for _, tc := range []struct {
		name   string
		live   *unstructured.Unstructured
		getErr error
		want   bool
	}{
		{"there, not being deleted", pool("u1", false), nil, false},
		{"being deleted", pool("u1", true), nil, true},
		{"gone", nil, notFound, true},
		{"gone and created again", pool("u2", false), nil, true},
		{"the read failed", nil, errors.New("connection refused"), false},
	} {
		if got := poolGoing(tc.live, tc.getErr, "u1"); got != tc.want {
			t.Errorf("%s: poolGoing = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// The race of a pool deleted between its first address and its finalizer, which the informer
// does not show yet: the API server refuses the finalizer, and protect says the pool is going
// (errPoolGoing) so that the address is given back unpublished, instead of an error retried as
// if the pool stayed, or an RBAC message for a pool that is gone.
func TestProtect_PoolGoingMeanwhileIsReported(t *testing.T) {
	cached := &unstructured.Unstructured{}
	cached.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	cached.SetKind("IPPool")
	cached.SetName("public")
	cached.SetUID("u1")
	deleting := cached.DeepCopy()
	now := metav1.Now()
	deleting.SetDeletionTimestamp(&now)
	deleting.SetFinalizers([]string{"example.com/keep"})
	gk := schema.GroupKind{Group: v1alpha1.SchemeGroupVersion.Group, Kind: "IPPool"}
	refusedNewFinalizer := apierrors.NewInvalid(gk, "public", field.ErrorList{field.Forbidden(field.NewPath("metadata", "finalizers"),
		`no new finalizers can be added if the object is being deleted, found new finalizers []string{"ironlb.io/pool-protection"}`)})
	createForbidden := apierrors.NewForbidden(v1alpha1.IPPoolResource.GroupResource(), "public", errors.New(`User "ironlb-ccm" cannot create resource "ippools"`))

	for _, tc := range []struct {
		name      string
		live      []runtime.Object // the pool as the API server has it
		applyErr  error
		wantGoing bool
		wantErr   bool
		wantRBAC  bool // logged as missing RBAC, and served unprotected
	}{
		{name: "being deleted", live: []runtime.Object{deleting}, applyErr: refusedNewFinalizer, wantGoing: true, wantErr: true},
		{name: "gone: the apply would create it", applyErr: createForbidden, wantGoing: true, wantErr: true},
		{name: "there, RBAC refuses the patch", live: []runtime.Object{cached.DeepCopy()}, applyErr: createForbidden, wantRBAC: true},
		{name: "there, the apply lands", live: []runtime.Object{cached.DeepCopy()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{v1alpha1.IPPoolResource: "IPPoolList"}, tc.live...)
			applied := 0
			dyn.PrependReactor("patch", "ippools", func(k8stesting.Action) (bool, runtime.Object, error) {
				applied++
				return true, cached.DeepCopy(), tc.applyErr
			})
			c := NewPoolController(nil, dyn, 0)
			if err := c.informer.GetStore().Add(cached.DeepCopy()); err != nil {
				t.Fatal(err)
			}
			err := c.protect(context.Background(), "public")
			if applied != 1 {
				t.Fatalf("%d applies of the finalizer, want 1", applied)
			}
			if got := errors.Is(err, errPoolGoing); got != tc.wantGoing || (err != nil) != tc.wantErr {
				t.Errorf("protect = %v; want errPoolGoing %t, an error %t", err, tc.wantGoing, tc.wantErr)
			}
			if c.protection.forbidden != tc.wantRBAC {
				t.Errorf("taken for missing RBAC: %t, want %t", c.protection.forbidden, tc.wantRBAC)
			}
		})
	}
}
