package provider

import (
	"cmp"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/provider/ipam"
)

// A waiter is a Service that was refused for want of a free address. Services wait in lines, one
// per pool and family (ipam.Line), in the order they started waiting: a freed address goes to
// the head of its line, and no one behind the head takes a fresh address from that line.
// Requeueing every waiting Service instead lets whichever worker runs first win.
type waiter struct {
	key   string
	since time.Time // when it was first refused for want of an address
	lines []ipam.Line
}

// waitedLonger orders waiters: first refused first, then by key so the order is total.
func waitedLonger(a, b waiter) int {
	if c := a.since.Compare(b.since); c != 0 {
		return c
	}
	return cmp.Compare(a.key, b.key)
}

// linesAhead returns the lines in which some other Service waited longer than key: the lines
// key may take no fresh address from. A Service that does not wait is behind every waiter.
func linesAhead(waiters map[string]waiter, key string) []ipam.Line {
	me, waits := waiters[key]
	var out []ipam.Line
	for _, w := range waiters {
		if w.key == key || (waits && waitedLonger(w, me) > 0) {
			continue
		}
		for _, l := range w.lines {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	slices.SortFunc(out, compareLines)
	return out
}

// heads returns the Service at the head of each line, longest waiting first, each once.
func heads(waiters map[string]waiter) []string {
	head := map[ipam.Line]waiter{}
	for _, w := range waiters {
		for _, l := range w.lines {
			if h, ok := head[l]; !ok || waitedLonger(w, h) < 0 {
				head[l] = w
			}
		}
	}
	ws := make([]waiter, 0, len(head))
	for _, w := range head {
		if !slices.ContainsFunc(ws, func(x waiter) bool { return x.key == w.key }) {
			ws = append(ws, w)
		}
	}
	slices.SortFunc(ws, waitedLonger)
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.key
	}
	return out
}

// waitingSince is when a Service refused for want of an address started waiting: the time its
// condition turned False for that reason, which survives a restart of ironlb-ccm, or now.
func waitingSince(prev *metav1.Condition, now time.Time) time.Time {
	if prev != nil && prev.Status == metav1.ConditionFalse && prev.Reason == string(ipam.ReasonPoolExhausted) &&
		!prev.LastTransitionTime.IsZero() && prev.LastTransitionTime.Time.Before(now) {
		return prev.LastTransitionTime.Time
	}
	return now
}

func compareLines(a, b ipam.Line) int {
	if c := cmp.Compare(a.Pool, b.Pool); c != 0 {
		return c
	}
	return cmp.Compare(a.Family, b.Family)
}
