package provider

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/provider/ipam"
)

var (
	t0      = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tinyV4  = ipam.Line{Pool: "tiny", Family: ipam.IPv4}
	tinyV6  = ipam.Line{Pool: "tiny", Family: ipam.IPv6}
	otherV4 = ipam.Line{Pool: "other", Family: ipam.IPv4}
)

func waiters(ws ...waiter) map[string]waiter {
	m := map[string]waiter{}
	for _, w := range ws {
		m[w.key] = w
	}
	return m
}

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func TestLinesAhead_OnlyTheLongestWaitingTakesAFreshAddress(t *testing.T) {
	line := waiters(
		waiter{key: "default/first", since: at(1), lines: []ipam.Line{tinyV4}},
		waiter{key: "default/second", since: at(2), lines: []ipam.Line{tinyV4}},
		waiter{key: "default/third", since: at(3), lines: []ipam.Line{tinyV4, otherV4}},
		waiter{key: "default/dual", since: at(0), lines: []ipam.Line{tinyV6}},
		// Same second: the key decides, so every replica orders alike.
		waiter{key: "default/a-tie", since: at(5), lines: []ipam.Line{otherV4}},
		waiter{key: "default/b-tie", since: at(5), lines: []ipam.Line{otherV4}},
	)
	tests := []struct {
		key  string
		want []ipam.Line
	}{
		{"default/first", []ipam.Line{tinyV6}},
		{"default/second", []ipam.Line{tinyV4, tinyV6}},
		{"default/third", []ipam.Line{tinyV4, tinyV6}},
		{"default/dual", nil},
		{"default/a-tie", []ipam.Line{otherV4, tinyV4, tinyV6}},
		{"default/b-tie", []ipam.Line{otherV4, tinyV4, tinyV6}},
		{"default/newcomer", []ipam.Line{otherV4, tinyV4, tinyV6}},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := linesAhead(line, tt.key); !slices.Equal(got, tt.want) {
				t.Errorf("linesAhead(%s) = %v, want %v", tt.key, got, tt.want)
			}
		})
	}
	if got := linesAhead(waiters(), "default/alone"); got != nil {
		t.Errorf("linesAhead with nobody waiting = %v, want none", got)
	}
}

func TestHeads_TheLongestWaitingOfEachLineOnce(t *testing.T) {
	tests := []struct {
		name string
		line map[string]waiter
		want []string
	}{
		{"nobody waits", waiters(), []string{}},
		{"one line, in the order of waiting, not of names", waiters(
			waiter{key: "default/a", since: at(3), lines: []ipam.Line{tinyV4}},
			waiter{key: "default/b", since: at(1), lines: []ipam.Line{tinyV4}},
			waiter{key: "default/c", since: at(2), lines: []ipam.Line{tinyV4}},
		), []string{"default/b"}},
		{"each line has its head; one head of two lines is named once", waiters(
			waiter{key: "default/both", since: at(1), lines: []ipam.Line{tinyV4, otherV4}},
			waiter{key: "default/v6", since: at(2), lines: []ipam.Line{tinyV6}},
			waiter{key: "default/later", since: at(3), lines: []ipam.Line{tinyV4, tinyV6, otherV4}},
		), []string{"default/both", "default/v6"}},
		{"same second: the key decides", waiters(
			waiter{key: "default/b", since: at(1), lines: []ipam.Line{tinyV4}},
			waiter{key: "default/a", since: at(1), lines: []ipam.Line{tinyV4}},
		), []string{"default/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := heads(tt.line); !slices.Equal(got, tt.want) {
				t.Errorf("heads = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWaitingSince_SurvivesARestartThroughTheCondition(t *testing.T) {
	now := at(100)
	cond := func(status metav1.ConditionStatus, reason string, ltt time.Time) *metav1.Condition {
		return &metav1.Condition{Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(ltt)}
	}
	tests := []struct {
		name string
		prev *metav1.Condition
		want time.Time
	}{
		{"no condition: starts now", nil, now},
		{"refused for want of an address: since the condition turned False", cond(metav1.ConditionFalse, "PoolExhausted", at(7)), at(7)},
		{"refused for another reason: starts now", cond(metav1.ConditionFalse, "UnknownPool", at(7)), now},
		{"was allocated: starts now", cond(metav1.ConditionTrue, "Allocated", at(7)), now},
		{"a transition time in the future is not trusted", cond(metav1.ConditionFalse, "PoolExhausted", at(200)), now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := waitingSince(tt.prev, now); !got.Equal(tt.want) {
				t.Errorf("waitingSince = %v, want %v", got, tt.want)
			}
		})
	}
}
