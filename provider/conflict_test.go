package provider

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Owned fields as the API server lists them in managedFields.
const (
	fieldsIngress       = `{"f:status":{"f:loadBalancer":{"f:ingress":{}}}}`
	fieldsCCM           = `{"f:metadata":{"f:annotations":{"f:ironlb.io/allocated-from":{}}},"f:status":{"f:conditions":{"k:{\"type\":\"ironlb.io/IPAllocated\"}":{".":{},"f:type":{}}},"f:loadBalancer":{"f:ingress":{}}}}`
	fieldsSpeaker       = `{"f:status":{"f:conditions":{"k:{\"type\":\"ironlb.io/Announced\"}":{".":{},"f:message":{},"f:type":{}}}}}`
	fieldsEmptyLB       = `{"f:status":{"f:loadBalancer":{}}}`
	fieldsSpecOnly      = `{"f:spec":{"f:ports":{}},"f:metadata":{"f:annotations":{"f:note":{"f:loadBalancer":{}}}}}`
	fieldsIngressAndMsg = `{"f:metadata":{"f:labels":{}},"f:status":{"f:conditions":{},"f:loadBalancer":{".":{},"f:ingress":{}}}}`
)

func managed(manager string, op metav1.ManagedFieldsOperationType, subresource, fields string, at time.Time) metav1.ManagedFieldsEntry {
	e := metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: subresource, APIVersion: "v1", FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
	if !at.IsZero() {
		t := metav1.NewTime(at)
		e.Time = &t
	}
	return e
}

func TestConflictingWriter_AnotherManagerOwningTheIngressConflictsUntilQuiet(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	ccm := managed(v1alpha1.FieldManagerCCM, metav1.ManagedFieldsOperationApply, "status", fieldsCCM, ago(time.Hour))
	tests := []struct {
		name        string
		fields      []metav1.ManagedFieldsEntry
		prior       standoff
		wantManager string
		wantUntil   time.Time
	}{
		{name: "no managedFields"},
		{name: "ironlb-ccm alone", fields: []metav1.ManagedFieldsEntry{ccm}},
		{
			name: "ironlb-ccm's own update (the finalizer patch) is not another writer",
			fields: []metav1.ManagedFieldsEntry{ccm,
				managed(v1alpha1.FieldManagerCCM, metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(time.Second))},
		},
		{
			name:   "the speakers own only their condition",
			fields: []metav1.ManagedFieldsEntry{ccm, managed(v1alpha1.FieldManagerSpeaker, metav1.ManagedFieldsOperationApply, "status", fieldsSpeaker, ago(time.Second))},
		},
		{
			name:        "an update on the status subresource",
			fields:      []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(time.Second))},
			wantManager: "other-lb", wantUntil: ago(time.Second).Add(QuietPeriod),
		},
		{
			name:        "an apply",
			fields:      []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationApply, "status", fieldsIngressAndMsg, ago(10*time.Second))},
			wantManager: "other-lb", wantUntil: ago(10 * time.Second).Add(QuietPeriod),
		},
		{
			name:        "the kube-controller-manager's service controller is another writer too",
			fields:      []metav1.ManagedFieldsEntry{managed("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(time.Second))},
			wantManager: "kube-controller-manager", wantUntil: ago(time.Second).Add(QuietPeriod),
		},
		{
			name:   "quiet for the quiet period: gone",
			fields: []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(QuietPeriod))},
		},
		{
			name:   "an entry that gave the ingress up",
			fields: []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsEmptyLB, ago(time.Second))},
		},
		{
			name:   "a manager of other fields",
			fields: []metav1.ManagedFieldsEntry{ccm, managed("kubectl", metav1.ManagedFieldsOperationApply, "", fieldsSpecOnly, ago(time.Second))},
		},
		{
			name:   "an entry without fields",
			fields: []metav1.ManagedFieldsEntry{ccm, {Manager: "other-lb", Operation: metav1.ManagedFieldsOperationUpdate}},
		},
		{
			name:   "unreadable fields",
			fields: []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", `{"f:loadBalancer"`, ago(time.Second))},
		},
		{
			name:        "an entry without a time cannot be shown quiet",
			fields:      []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, time.Time{})},
			wantManager: "other-lb", wantUntil: now.Add(QuietPeriod),
		},
		{
			name: "of two writers the last one is named; the conflict lasts until both are quiet",
			fields: []metav1.ManagedFieldsEntry{
				managed("old-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(5*time.Second)),
				managed("new-lb", metav1.ManagedFieldsOperationApply, "status", fieldsIngress, ago(20*time.Second)),
			},
			prior:       standoff{manager: "new-lb", takeovers: 1},
			wantManager: "old-lb", wantUntil: ago(20 * time.Second).Add(2 * QuietPeriod),
		},
		{
			name: "writers of the same second are named in name order",
			fields: []metav1.ManagedFieldsEntry{
				managed("b-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(time.Second)),
				managed("a-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(time.Second)),
			},
			wantManager: "a-lb", wantUntil: ago(time.Second).Add(QuietPeriod),
		},
		{
			name:        "a writer that took the field back after a takeover must be quiet twice as long",
			fields:      []metav1.ManagedFieldsEntry{ccm, managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(45*time.Second))},
			prior:       standoff{manager: "other-lb", takeovers: 1},
			wantManager: "other-lb", wantUntil: ago(45 * time.Second).Add(2 * QuietPeriod),
		},
		{
			name:   "the longer quiet period is only for the writer that took the field back",
			fields: []metav1.ManagedFieldsEntry{ccm, managed("new-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, ago(45*time.Second))},
			prior:  standoff{manager: "other-lb", takeovers: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			manager, until := conflictingWriter(tt.fields, now, tt.prior)
			if manager != tt.wantManager || !until.Equal(tt.wantUntil) {
				t.Errorf("conflictingWriter = %q until %v, want %q until %v", manager, until, tt.wantManager, tt.wantUntil)
			}
		})
	}
}

func TestStandoff_QuietPeriodDoublesPerTakeoverUpToTheMaximum(t *testing.T) {
	tests := []struct {
		s       standoff
		manager string
		want    time.Duration
	}{
		{standoff{}, "other-lb", QuietPeriod},
		{standoff{manager: "other-lb"}, "other-lb", QuietPeriod},
		{standoff{manager: "other-lb", takeovers: 1}, "other-lb", 2 * QuietPeriod},
		{standoff{manager: "other-lb", takeovers: 3}, "other-lb", 8 * QuietPeriod},
		{standoff{manager: "other-lb", takeovers: 3}, "new-lb", QuietPeriod},
		{standoff{manager: "other-lb", takeovers: 7}, "other-lb", MaxQuietPeriod},
		{standoff{manager: "other-lb", takeovers: 1000}, "other-lb", MaxQuietPeriod},
	}
	for _, tt := range tests {
		if got := tt.s.quietPeriod(tt.manager); got != tt.want {
			t.Errorf("%+v.quietPeriod(%s) = %v, want %v", tt.s, tt.manager, got, tt.want)
		}
	}
}

func TestStandoff_NextCountsTakeoversFromTheSameWriter(t *testing.T) {
	tests := []struct {
		name        string
		s           standoff
		other       string
		wasConflict bool
		want        standoff
	}{
		{"no conflict, none before", standoff{}, "", false, standoff{}},
		{"a conflict starts", standoff{}, "other-lb", false, standoff{manager: "other-lb"}},
		{"the conflict goes on", standoff{manager: "other-lb"}, "other-lb", true, standoff{manager: "other-lb"}},
		{"the conflict ends: a takeover", standoff{manager: "other-lb"}, "", true, standoff{manager: "other-lb", takeovers: 1}},
		{"no conflict after a takeover", standoff{manager: "other-lb", takeovers: 1}, "", false, standoff{manager: "other-lb", takeovers: 1}},
		{"the same writer comes back", standoff{manager: "other-lb", takeovers: 1}, "other-lb", false, standoff{manager: "other-lb", takeovers: 1}},
		{"another writer starts afresh", standoff{manager: "other-lb", takeovers: 2}, "new-lb", false, standoff{manager: "new-lb"}},
		{"a conflict said by a former leader ends", standoff{}, "", true, standoff{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.next(tt.other, tt.wasConflict); got != tt.want {
				t.Errorf("next = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestConflictCondition_NamesTheOtherWriterAndWhatIronlbKeeps(t *testing.T) {
	since := metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	allocated := metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated",
		Message: "172.31.10.5 from pool public", ObservedGeneration: 4}
	exhausted := metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionFalse, Reason: "PoolExhausted",
		Message: "no free IPv4 address in pool public", ObservedGeneration: 4}
	tests := []struct {
		name     string
		prev     *metav1.Condition
		own      metav1.Condition
		held     string
		want     []string
		keepTime bool
	}{
		{
			name: "an address kept",
			prev: &allocated, own: allocated, held: "172.31.10.5",
			want: []string{"field manager other-lb writes status.loadBalancer", "ironlb keeps 172.31.10.5 reserved for this Service",
				"when other-lb gives the field up or has not written it for 30s"},
		},
		{
			name: "no address",
			prev: &exhausted, own: exhausted,
			want:     []string{"field manager other-lb", "holds no address for this Service (PoolExhausted: no free IPv4 address in pool public)"},
			keepTime: true,
		},
		{
			name: "an address kept, and a request that cannot be met",
			own: metav1.Condition{Status: metav1.ConditionFalse, Reason: "AddressInUse",
				Message: "172.31.10.9 is held by shop/other; the Service keeps 172.31.10.5"},
			held: "172.31.10.5",
			want: []string{"keeps 172.31.10.5 reserved", "(AddressInUse: 172.31.10.9 is held by shop/other"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := testAddrs()
			if tt.held != "" {
				held = testAddrs(tt.held)
			}
			prev := tt.prev
			if prev != nil {
				p := *prev
				p.LastTransitionTime = since
				prev = &p
			}
			got := conflictCondition(prev, tt.own, held, "other-lb", QuietPeriod)
			if got.Status != metav1.ConditionFalse || got.Reason != ReasonConflictingController || got.Type != tt.own.Type ||
				got.ObservedGeneration != tt.own.ObservedGeneration {
				t.Errorf("condition %s %s/%s generation %d, want %s False/%s generation %d", got.Type, got.Status, got.Reason,
					got.ObservedGeneration, tt.own.Type, ReasonConflictingController, tt.own.ObservedGeneration)
			}
			for _, w := range tt.want {
				if !strings.Contains(got.Message, w) {
					t.Errorf("message %q does not say %q", got.Message, w)
				}
			}
			if kept := got.LastTransitionTime.Equal(&since); kept != tt.keepTime {
				t.Errorf("lastTransitionTime %v kept = %v, want %v", got.LastTransitionTime, kept, tt.keepTime)
			}
			if !inConflict(&got) || inConflict(&tt.own) {
				t.Errorf("inConflict(conflict) = %v, inConflict(own) = %v", inConflict(&got), inConflict(&tt.own))
			}
		})
	}
}
