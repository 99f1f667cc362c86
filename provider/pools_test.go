package provider

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

func testRange(s string) netipx.IPRange { return netipx.MustParseIPRange(s) }

func testBoolPtr(b bool) *bool { return &b }

func testPool(name string, addresses ...v1alpha1.AddressRange) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3, CreationTimestamp: metav1.Unix(1700000000, 0)},
		Spec:       v1alpha1.IPPoolSpec{Addresses: addresses},
	}
}

// CIDRs cover their masked network; ranges of either family are taken as written.
func TestParseAddressRange_CIDRsAndRangesOfBothFamilies(t *testing.T) {
	tests := []struct{ in, want string }{
		{"172.31.10.0/24", "172.31.10.0-172.31.10.255"},
		{"172.31.10.5/24", "172.31.10.0-172.31.10.255"},
		{"172.31.10.16/28", "172.31.10.16-172.31.10.31"},
		{"172.31.10.7/32", "172.31.10.7-172.31.10.7"},
		{"fd31::/120", "fd31::-fd31::ff"},
		{"fd31::1:5/112", "fd31::1:0-fd31::1:ffff"},
		{"fd31::7/128", "fd31::7-fd31::7"},
		{"172.31.10.10-172.31.10.20", "172.31.10.10-172.31.10.20"},
		{"172.31.10.10 - 172.31.10.20", "172.31.10.10-172.31.10.20"},
		{"172.31.10.10-172.31.10.10", "172.31.10.10-172.31.10.10"},
		{"172.31.10.250-172.31.11.5", "172.31.10.250-172.31.11.5"},
		{"fd31::10-fd31::20", "fd31::10-fd31::20"},
		{"FD31::10-fd31:0::20", "fd31::10-fd31::20"},
		{"fd31::ffff-fd31::1:0", "fd31::ffff-fd31::1:0"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := v1alpha1.AddressRange(tt.in).IPRange()
			if err != nil {
				t.Fatal(err)
			}
			if got != testRange(tt.want) {
				t.Errorf("IPRange(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseAddressRange_BadInputIsAnErrorQuotingIt(t *testing.T) {
	for _, in := range []string{
		"",
		"pool",
		"172.31.10.5",
		"172.31.10.0/33",
		"172.31.10.300/24",
		"fd31::/129",
		"172.31.10.20-172.31.10.10",
		"fd31::20-fd31::10",
		"172.31.10.10-fd31::10",
		"fd31::10-172.31.10.10",
		"172.31.10.10-",
		"-172.31.10.10",
		"172.31.10.10-172.31.10.20-172.31.10.30",
		"172.31.10.0/24-172.31.10.255",
	} {
		t.Run(in, func(t *testing.T) {
			got, err := v1alpha1.AddressRange(in).IPRange()
			if err == nil {
				t.Fatalf("IPRange(%q) = %v, want an error", in, got)
			}
			if !strings.Contains(err.Error(), `"`+in+`"`) {
				t.Errorf("error %q does not quote the input %q", err, in)
			}
		})
	}
}

func TestPoolFor_Defaults(t *testing.T) {
	p := testPool("public", "172.31.10.0/28", "172.31.10.100-172.31.10.120", "fd31::/120")
	got, err := poolFor(p)
	if err != nil {
		t.Fatal(err)
	}
	want := ipam.Pool{
		Name:        "public",
		Ranges:      []netipx.IPRange{testRange("172.31.10.0-172.31.10.15"), testRange("172.31.10.100-172.31.10.120"), testRange("fd31::-fd31::ff")},
		Visibility:  ipam.External,
		AutoAssign:  true,
		CreatedUnix: 1700000000,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("poolFor =\n%+v\nwant\n%+v", got, want)
	}
}

func TestPoolFor_SpecFieldsAreCarriedOver(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*v1alpha1.IPPoolSpec)
		check func(ipam.Pool) bool
	}{
		{"autoAssign true", func(s *v1alpha1.IPPoolSpec) { s.AutoAssign = testBoolPtr(true) }, func(p ipam.Pool) bool { return p.AutoAssign }},
		{"autoAssign false", func(s *v1alpha1.IPPoolSpec) { s.AutoAssign = testBoolPtr(false) }, func(p ipam.Pool) bool { return !p.AutoAssign }},
		{"visibility External", func(s *v1alpha1.IPPoolSpec) { s.Visibility = v1alpha1.VisibilityExternal }, func(p ipam.Pool) bool { return p.Visibility == ipam.External }},
		{"visibility Internal", func(s *v1alpha1.IPPoolSpec) { s.Visibility = v1alpha1.VisibilityInternal }, func(p ipam.Pool) bool { return p.Visibility == ipam.Internal }},
		{"avoidBuggyIPs", func(s *v1alpha1.IPPoolSpec) { s.AvoidBuggyIPs = true }, func(p ipam.Pool) bool { return p.AvoidBuggyIPs }},
		{"no serviceAllocation: not reserved", func(*v1alpha1.IPPoolSpec) {}, func(p ipam.Pool) bool {
			return !p.Reserved && p.NamespaceSelector == nil && p.ServiceSelector == nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool("public", "172.31.10.0/28")
			tt.setup(&p.Spec)
			got, err := poolFor(p)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(got) {
				t.Errorf("poolFor = %+v", got)
			}
		})
	}
}

func TestPoolFor_ServiceAllocationReservesThePoolForMatchingServices(t *testing.T) {
	p := testPool("team-a", "172.31.20.0/28")
	p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{
		Priority:          10,
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
		ServiceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}},
		}},
	}
	got, err := poolFor(p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Reserved || got.Priority != 10 {
		t.Errorf("Reserved %v Priority %d, want true 10", got.Reserved, got.Priority)
	}
	if got.NamespaceSelector == nil || got.ServiceSelector == nil {
		t.Fatalf("selectors %v, %v; want both set", got.NamespaceSelector, got.ServiceSelector)
	}
	nsTests := []struct {
		labels labels.Set
		want   bool
	}{
		{labels.Set{"team": "a"}, true},
		{labels.Set{"team": "a", "env": "prod"}, true},
		{labels.Set{"team": "b"}, false},
		{labels.Set{}, false},
	}
	for _, tt := range nsTests {
		if got := got.NamespaceSelector.Matches(tt.labels); got != tt.want {
			t.Errorf("namespace selector on %v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	svcTests := []struct {
		labels labels.Set
		want   bool
	}{
		{labels.Set{"tier": "web"}, true},
		{labels.Set{"tier": "api"}, true},
		{labels.Set{"tier": "db"}, false},
		{labels.Set{"app": "web"}, false},
	}
	for _, tt := range svcTests {
		if got := got.ServiceSelector.Matches(tt.labels); got != tt.want {
			t.Errorf("service selector on %v = %v, want %v", tt.labels, got, tt.want)
		}
	}
}

func TestPoolFor_ServiceAllocationWithoutSelectorsMatchesEveryService(t *testing.T) {
	p := testPool("reserved", "172.31.20.0/28")
	p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: 5, ServiceSelector: &metav1.LabelSelector{}}
	got, err := poolFor(p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Reserved || got.Priority != 5 {
		t.Errorf("Reserved %v Priority %d, want true 5", got.Reserved, got.Priority)
	}
	if got.NamespaceSelector != nil && !got.NamespaceSelector.Matches(labels.Set{"any": "thing"}) {
		t.Errorf("absent namespace selector %v does not match everything", got.NamespaceSelector)
	}
	if got.ServiceSelector == nil || !got.ServiceSelector.Matches(labels.Set{"any": "thing"}) || !got.ServiceSelector.Matches(labels.Set{}) {
		t.Errorf("empty service selector %v does not match everything", got.ServiceSelector)
	}
}

func TestPoolFor_BadSelectorIsAnErrorNamingTheField(t *testing.T) {
	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Sometimes", Values: []string{"a"}}}}
	tests := []struct {
		name  string
		sa    v1alpha1.ServiceAllocation
		field string
	}{
		{"namespace selector", v1alpha1.ServiceAllocation{NamespaceSelector: bad}, "serviceAllocation.namespaceSelector"},
		{"service selector", v1alpha1.ServiceAllocation{ServiceSelector: bad}, "serviceAllocation.serviceSelector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool("team-a", "172.31.20.0/28")
			p.Spec.ServiceAllocation = &tt.sa
			_, err := poolFor(p)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error = %v, want one naming %s", err, tt.field)
			}
		})
	}
}

func TestPoolFor_BadAddressIsAnErrorNamingIt(t *testing.T) {
	_, err := poolFor(testPool("public", "172.31.10.0/24", "172.31.10.20-172.31.10.10"))
	if err == nil || !strings.Contains(err.Error(), "172.31.10.20-172.31.10.10") {
		t.Errorf("error = %v, want one naming the bad range", err)
	}
}

func testPoolCondition(t *testing.T, st v1alpha1.IPPoolStatus, typ string) metav1.Condition {
	t.Helper()
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("no %s condition in %+v", typ, st.Conditions)
	return metav1.Condition{}
}

func TestPoolStatus_CountsPerFamilyAreCopied(t *testing.T) {
	p := testPool("public", "172.31.10.0/28", "fd31::/120")
	st := ipam.PoolStatus{
		Capacity:  map[ipam.Family]string{ipam.IPv4: "16", ipam.IPv6: "256"},
		Allocated: map[ipam.Family]string{ipam.IPv4: "3", ipam.IPv6: "1"},
		Available: map[ipam.Family]string{ipam.IPv4: "13", ipam.IPv6: "255"},
	}
	got := poolStatus(p, st, true, nil, ipam.PoolUsers{})
	if want := (&v1alpha1.FamilyCount{Capacity: "16", Allocated: "3", Available: "13"}); !reflect.DeepEqual(got.IPv4, want) {
		t.Errorf("IPv4 = %+v, want %+v", got.IPv4, want)
	}
	if want := (&v1alpha1.FamilyCount{Capacity: "256", Allocated: "1", Available: "255"}); !reflect.DeepEqual(got.IPv6, want) {
		t.Errorf("IPv6 = %+v, want %+v", got.IPv6, want)
	}
	if got.ObservedGeneration != 3 {
		t.Errorf("observedGeneration = %d, want 3", got.ObservedGeneration)
	}
}

func TestPoolStatus_FamiliesThePoolLacksHaveNoCounts(t *testing.T) {
	p := testPool("v6", "fd31::/64")
	st := ipam.PoolStatus{
		Capacity:  map[ipam.Family]string{ipam.IPv6: "18446744073709551616"},
		Allocated: map[ipam.Family]string{ipam.IPv6: "0"},
		Available: map[ipam.Family]string{ipam.IPv6: "18446744073709551616"},
	}
	got := poolStatus(p, st, true, nil, ipam.PoolUsers{})
	if got.IPv4 != nil {
		t.Errorf("IPv4 = %+v, want none", got.IPv4)
	}
	if got.IPv6 == nil || got.IPv6.Capacity != "18446744073709551616" {
		t.Errorf("IPv6 = %+v, want capacity 2^64", got.IPv6)
	}

	unknown := poolStatus(p, ipam.PoolStatus{}, false, nil, ipam.PoolUsers{})
	if unknown.IPv4 != nil || unknown.IPv6 != nil {
		t.Errorf("pool unknown to the allocator: counts %+v %+v, want none", unknown.IPv4, unknown.IPv6)
	}
}

func TestPoolStatus_UsablePoolIsReadyWithoutConflict(t *testing.T) {
	p := testPool("public", "172.31.10.0/28")
	got := poolStatus(p, ipam.PoolStatus{Capacity: map[ipam.Family]string{ipam.IPv4: "16"}}, true, nil, ipam.PoolUsers{})
	ready := testPoolCondition(t, got, v1alpha1.PoolConditionReady)
	if ready.Status != metav1.ConditionTrue || ready.Reason != "Ready" || ready.ObservedGeneration != 3 {
		t.Errorf("Ready = %+v, want True/Ready at generation 3", ready)
	}
	conflict := testPoolCondition(t, got, v1alpha1.PoolConditionConflict)
	if conflict.Status != metav1.ConditionFalse || conflict.ObservedGeneration != 3 {
		t.Errorf("Conflict = %+v, want False at generation 3", conflict)
	}
	if len(got.Conditions) != 2 {
		t.Errorf("conditions = %+v, want exactly Ready and Conflict", got.Conditions)
	}
}

func TestPoolStatus_OverlapIsAConflictNamingTheOtherPool(t *testing.T) {
	p := testPool("newer", "172.31.10.0/28")
	got := poolStatus(p, ipam.PoolStatus{ConflictsWith: []string{"older", "oldest"}}, true, nil, ipam.PoolUsers{})
	conflict := testPoolCondition(t, got, v1alpha1.PoolConditionConflict)
	if conflict.Status != metav1.ConditionTrue {
		t.Errorf("Conflict status = %s, want True", conflict.Status)
	}
	for _, name := range []string{"older", "oldest"} {
		if !strings.Contains(conflict.Message, name) {
			t.Errorf("Conflict message %q does not name %s", conflict.Message, name)
		}
	}
	ready := testPoolCondition(t, got, v1alpha1.PoolConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != "Conflict" {
		t.Errorf("Ready = %s/%s, want False/Conflict", ready.Status, ready.Reason)
	}
	if !strings.Contains(ready.Message, "older") {
		t.Errorf("Ready message %q does not name the other pool", ready.Message)
	}
}

func TestPoolStatus_InvalidAddressesMakeThePoolNotReady(t *testing.T) {
	p := testPool("broken", "172.31.10.20-172.31.10.10")
	_, perr := poolFor(p)
	if perr == nil {
		t.Fatal("poolFor accepted a reversed range")
	}
	got := poolStatus(p, ipam.PoolStatus{}, false, perr, ipam.PoolUsers{})
	ready := testPoolCondition(t, got, v1alpha1.PoolConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != "InvalidAddresses" {
		t.Errorf("Ready = %s/%s, want False/InvalidAddresses", ready.Status, ready.Reason)
	}
	if !strings.Contains(ready.Message, "172.31.10.20-172.31.10.10") {
		t.Errorf("Ready message %q does not say which entry is bad", ready.Message)
	}
	if c := testPoolCondition(t, got, v1alpha1.PoolConditionConflict); c.Status != metav1.ConditionFalse {
		t.Errorf("Conflict = %s, want False", c.Status)
	}
	if got.IPv4 != nil || got.IPv6 != nil {
		t.Errorf("invalid pool has counts %+v %+v", got.IPv4, got.IPv6)
	}

	// An invalid pool is not ready even if the allocator still reports a conflict for it.
	got = poolStatus(p, ipam.PoolStatus{ConflictsWith: []string{"other"}}, true, errors.New("CIDR \"x\": bad"), ipam.PoolUsers{})
	if r := testPoolCondition(t, got, v1alpha1.PoolConditionReady); r.Reason != "InvalidAddresses" {
		t.Errorf("Ready reason = %s, want InvalidAddresses", r.Reason)
	}
}

func TestPoolStatus_TransitionTimeKeptWhileStatusUnchanged(t *testing.T) {
	since := metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	p := testPool("public", "172.31.10.0/28")
	p.Status.Conditions = []metav1.Condition{
		{Type: v1alpha1.PoolConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: since},
		{Type: v1alpha1.PoolConditionConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap", LastTransitionTime: since},
	}
	got := poolStatus(p, ipam.PoolStatus{}, true, nil, ipam.PoolUsers{})
	for _, c := range got.Conditions {
		if !c.LastTransitionTime.Equal(&since) {
			t.Errorf("%s lastTransitionTime = %v, want it kept at %v", c.Type, c.LastTransitionTime, since)
		}
	}
}

func TestPoolStatus_TransitionTimeIsNewWhenStatusChanges(t *testing.T) {
	since := metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	p := testPool("newer", "172.31.10.0/28")
	p.Status.Conditions = []metav1.Condition{
		{Type: v1alpha1.PoolConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: since},
		{Type: v1alpha1.PoolConditionConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap", LastTransitionTime: since},
	}
	start := time.Now().Add(-time.Second)
	got := poolStatus(p, ipam.PoolStatus{ConflictsWith: []string{"older"}}, true, nil, ipam.PoolUsers{})
	for _, c := range got.Conditions {
		if c.LastTransitionTime.Time.Before(start) {
			t.Errorf("%s flipped to %s but lastTransitionTime is %v, want now", c.Type, c.Status, c.LastTransitionTime)
		}
	}

	// A condition seen for the first time gets the current time too.
	fresh := poolStatus(testPool("fresh", "172.31.10.0/28"), ipam.PoolStatus{}, true, nil, ipam.PoolUsers{})
	for _, c := range fresh.Conditions {
		if c.LastTransitionTime.Time.Before(start) {
			t.Errorf("new %s lastTransitionTime = %v, want now", c.Type, c.LastTransitionTime)
		}
	}
}

func TestSameStatus_IgnoresTransitionTimesOnly(t *testing.T) {
	t1 := metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	t2 := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	base := func(ts metav1.Time) v1alpha1.IPPoolStatus {
		return v1alpha1.IPPoolStatus{
			ObservedGeneration: 2,
			IPv4:               &v1alpha1.FamilyCount{Capacity: "16", Allocated: "1", Available: "15"},
			Conditions: []metav1.Condition{
				{Type: v1alpha1.PoolConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "ok", ObservedGeneration: 2, LastTransitionTime: ts},
			},
		}
	}
	tests := []struct {
		name   string
		change func(*v1alpha1.IPPoolStatus)
		want   bool
	}{
		{"only the transition time differs", func(s *v1alpha1.IPPoolStatus) { s.Conditions[0].LastTransitionTime = t2 }, true},
		{"identical", func(*v1alpha1.IPPoolStatus) {}, true},
		{"condition status differs", func(s *v1alpha1.IPPoolStatus) { s.Conditions[0].Status = metav1.ConditionFalse }, false},
		{"condition message differs", func(s *v1alpha1.IPPoolStatus) { s.Conditions[0].Message = "other" }, false},
		{"allocated count differs", func(s *v1alpha1.IPPoolStatus) { s.IPv4.Allocated = "2" }, false},
		{"IPv6 counts appear", func(s *v1alpha1.IPPoolStatus) { s.IPv6 = &v1alpha1.FamilyCount{Capacity: "1"} }, false},
		{"observed generation differs", func(s *v1alpha1.IPPoolStatus) { s.ObservedGeneration = 3 }, false},
		{"a condition is missing", func(s *v1alpha1.IPPoolStatus) { s.Conditions = nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := base(t1), base(t1)
			tt.change(&b)
			if got := sameStatus(a, b); got != tt.want {
				t.Errorf("sameStatus = %v, want %v", got, tt.want)
			}
			if !a.Conditions[0].LastTransitionTime.Equal(&t1) {
				t.Errorf("sameStatus changed its argument's lastTransitionTime to %v", a.Conditions[0].LastTransitionTime)
			}
		})
	}
}
