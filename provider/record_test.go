package provider

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

func TestRecordedAddrs_ReadsTheRecordAndSetsAsideWhatIsNotAnAddress(t *testing.T) {
	tests := []struct {
		name     string
		ann      map[string]string
		want     []string
		wantBad  []string
		wantPref []string // what requestFor puts in Prefer
	}{
		{"no record", nil, nil, nil, nil},
		{"one address", map[string]string{v1alpha1.AnnotationAllocatedAddresses: "172.31.10.5"}, []string{"172.31.10.5"}, nil, []string{"172.31.10.5"}},
		{"dual-stack, spaces, mapped IPv4", map[string]string{v1alpha1.AnnotationAllocatedAddresses: " ::ffff:172.31.10.5 , fd31::5"},
			[]string{"172.31.10.5", "fd31::5"}, nil, []string{"172.31.10.5", "fd31::5"}},
		{"garbage and zones are set aside, the rest kept", map[string]string{v1alpha1.AnnotationAllocatedAddresses: "nope,fe80::1%eth0,172.31.10.5,"},
			[]string{"172.31.10.5"}, []string{"nope", "fe80::1%eth0"}, []string{"172.31.10.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, bad := recordedAddrs(tt.ann)
			if !slices.Equal(addrStrings(got), tt.want) || !slices.Equal(bad, tt.wantBad) {
				t.Errorf("recordedAddrs = %v, bad %q; want %v, bad %q", got, bad, tt.want, tt.wantBad)
			}
			svc := testLBService(tt.ann)
			req, err := requestFor(svc, nil, true)
			if err != nil {
				t.Fatalf("requestFor: %v (a record must never make a request invalid)", err)
			}
			if !slices.Equal(addrStrings(req.Prefer), tt.wantPref) {
				t.Errorf("Prefer = %v, want %v", req.Prefer, tt.wantPref)
			}
		})
	}
}

func TestRecordNotes_TakenNamesTheHolderIgnoredSaysWhy(t *testing.T) {
	unkept := []ipam.Unkept{
		{Addr: testAddrs("172.31.10.5")[0], Reason: ipam.ReasonInUse, Holder: "shop/thief"},
		{Addr: testAddrs("fd31::5")[0], Reason: ipam.ReasonWrongFamily},
		{Addr: testAddrs("192.0.2.1")[0], Reason: ipam.ReasonNotInPool},
	}
	taken, ignored := recordNotes(unkept, []string{"nope"})
	if want := []string{"recorded address 172.31.10.5 is held by shop/thief"}; !slices.Equal(taken, want) {
		t.Errorf("taken = %q, want %q", taken, want)
	}
	for i, want := range []string{`"nope"`, "fd31::5", "192.0.2.1"} {
		if i >= len(ignored) || !strings.Contains(ignored[i], want) || !strings.Contains(ignored[i], "ignored") {
			t.Errorf("ignored = %q, want entry %d to name %s and say it is ignored", ignored, i, want)
		}
	}
	if !strings.Contains(ignored[1], "IPv6") || !strings.Contains(ignored[2], "no pool") {
		t.Errorf("ignored = %q, want the family and the missing pool said", ignored)
	}
}

func TestAllocatedCondition_RecordedAddressTakenIsSaidAndStaysSaid(t *testing.T) {
	res := ipam.Result{Addrs: testAddrs("172.31.10.6"), Pool: "public"}
	taken := []string{"recorded address 172.31.10.5 is held by shop/thief"}
	got := allocatedCondition(testServiceWithCondition(nil), res, nil, taken)
	want := "172.31.10.6 from pool public; recorded address 172.31.10.5 is held by shop/thief"
	if got.Status != metav1.ConditionTrue || got.Reason != ReasonRecordedAddressTaken || got.Message != want {
		t.Fatalf("condition %s/%s %q, want True/%s %q", got.Status, got.Reason, got.Message, ReasonRecordedAddressTaken, want)
	}
	// Later syncs no longer see the record (the Service holds its addresses): the condition stays.
	got.LastTransitionTime = metav1.NewTime(time.Now().Add(-time.Hour))
	again := allocatedCondition(testServiceWithCondition(&got), res, nil, nil)
	if again.Reason != ReasonRecordedAddressTaken || again.Message != want {
		t.Errorf("resync: %s %q, want the same condition", again.Reason, again.Message)
	}
	// Once the Service holds something else, it is an ordinary allocation again.
	moved := allocatedCondition(testServiceWithCondition(&got), ipam.Result{Addrs: testAddrs("172.31.10.7"), Pool: "public"}, nil, nil)
	if moved.Reason != "Allocated" || moved.Message != "172.31.10.7 from pool public" {
		t.Errorf("after a move: %s %q, want Allocated", moved.Reason, moved.Message)
	}
	// Without addresses, the failure says it too.
	fail := allocatedCondition(testServiceWithCondition(nil), ipam.Result{},
		&ipam.Error{Reason: ipam.ReasonPoolExhausted, Message: "no free IPv4 address left in pool public"}, taken)
	if fail.Status != metav1.ConditionFalse || !strings.HasSuffix(fail.Message, "; "+taken[0]) {
		t.Errorf("failure %s %q, want False and the taken address said", fail.Status, fail.Message)
	}
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}
