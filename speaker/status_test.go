package speaker

import (
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// TestQueueConditionsFollowChanges runs one condition writer (node n1) and
// one planner through a series of changes. Each time, the conditions n1
// writes must be those a fresh writer decides from the same plans, though
// it looks again only at Services whose inputs changed.
func TestQueueConditionsFollowChanges(t *testing.T) {
	newWriter := func() *conditionWriter {
		return &conditionWriter{
			node:    "n1",
			queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
			events:  &eventSink{recorder: record.NewFakeRecorder(100)},
			desired: map[types.NamespacedName]metav1.Condition{}, degraded: map[types.NamespacedName]string{},
			decided: map[types.NamespacedName]decision{},
		}
	}
	versioned := func(s *v1.Service, rv string) *v1.Service {
		s.ResourceVersion = rv
		return s
	}
	addr := netip.MustParseAddr("10.0.0.1")
	in := world([]string{"n1", "n2"}, defaultPools,
		versioned(service("a", "p", "10.0.0.1"), "1"),
		versioned(service("b", "p", "10.0.0.2"), "1"),
	)
	in.recorded = map[netip.Addr]string{addr: "n1", netip.MustParseAddr("10.0.0.2"): "n2"}
	candidates := map[string]bool{"n1": true, "n2": true}
	degraded := ""
	p, w := newPlanner(), newWriter()
	defer w.queue.ShutDown()

	steps := []struct {
		name   string
		change func()
		want   string // a's condition n1 writes: "" for none, else part of its message
	}{
		{"n1 answers a's address", func() {}, "10.0.0.1 by n1 on eth0"},
		{"nothing changed", func() {}, "10.0.0.1 by n1 on eth0"},
		{"the record moves a's address to n2", func() { in.recorded[addr] = "n2" }, ""},
		{"it comes back to n1", func() { in.recorded[addr] = "n1" }, "10.0.0.1 by n1 on eth0"},
		{"heartbeats break", func() { degraded = "heartbeats do not flow" }, "heartbeats do not flow"},
		{"they flow again", func() { degraded = "" }, "10.0.0.1 by n1 on eth0 (ARP)"},
		{"a's address has no node left", func() {
			in.alive = map[string]map[string]string{"n1": heartbeat(), "n2": heartbeat()}
		}, "no eligible node"},
		{"n1 is no longer a writer of Services without an owner", func() { candidates = map[string]bool{"n2": true} }, ""},
		{"a moves to another address", func() {
			in.alive = map[string]map[string]string{"n1": heartbeat("eth0"), "n2": heartbeat("eth0")}
			in.recorded[netip.MustParseAddr("10.0.0.7")] = "n1"
			in.services[0] = versioned(service("a", "p", "10.0.0.7"), "2")
		}, "10.0.0.7 by n1 on eth0"},
	}
	for _, step := range steps {
		step.change()
		l2, notAnnounced, bgp := p.plan(in, nil)
		w.queueConditions(in, l2, bgp, notAnnounced, candidates, degraded)
		fresh := newWriter()
		fresh.queueConditions(in, l2, bgp, notAnnounced, candidates, degraded)
		fresh.queue.ShutDown()

		c, ok := w.desired[key("a")]
		switch {
		case step.want == "" && ok:
			t.Errorf("%s: n1 writes %q, want nothing", step.name, c.Message)
		case step.want != "" && !strings.Contains(c.Message, step.want):
			t.Errorf("%s: n1 writes %q (written: %t), want it to say %q", step.name, c.Message, ok, step.want)
		}
		if len(w.desired) != len(fresh.desired) {
			t.Errorf("%s: n1 writes %v, a fresh writer %v", step.name, w.desired, fresh.desired)
		}
		for k, c := range fresh.desired {
			if !sameCondition(&c, new(w.desired[k])) {
				t.Errorf("%s: %s: n1 writes %+v, a fresh writer %+v", step.name, k, w.desired[k], c)
			}
		}
	}
}
