package provider

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
