package speaker

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/svcstatus"
)

// testWriter is a condition writer of node that writes nothing to the API.
func testWriter(node string) *conditionWriter {
	return &conditionWriter{
		node:    node,
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
		events:  &eventSink{recorder: record.NewFakeRecorder(100)},
		desired: map[types.NamespacedName]metav1.Condition{}, degraded: map[types.NamespacedName]string{},
		decided: map[types.NamespacedName]decision{},
	}
}

// TestQueueConditionsFollowChanges runs one condition writer (node n1) and
// one planner through a series of changes. Each time, the conditions n1
// writes must be those a fresh writer decides from the same plans, though
// it looks again only at Services whose inputs changed.
func TestQueueConditionsFollowChanges(t *testing.T) {
	newWriter := func() *conditionWriter { return testWriter("n1") }
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
			in.services[0] = cached(versioned(service("a", "p", "10.0.0.7"), "2"))
		}, "10.0.0.7 by n1 on eth0"},
	}
	for _, step := range steps {
		step.change()
		l2, notAnnounced, bgp := p.plan(in, nil)
		from := conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced, candidates: candidates, degraded: degraded}
		w.queueConditions(from, nil)
		fresh := newWriter()
		fresh.queueConditions(from, nil)
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
			if !svcstatus.SameCondition(&c, new(w.desired[k])) {
				t.Errorf("%s: %s: n1 writes %+v, a fresh writer %+v", step.name, k, w.desired[k], c)
			}
		}
	}
}

// TestFollowSessions_DecidesAgainOnlyWhereAnAddressLostOrRegainedItsSessions:
// the condition writer of n1 (the writer of every Service here) follows the
// Established BGP sessions with the plans of the last sync. A Service is
// looked at again only when one of its addresses goes from some Established
// session to none, or back; what it then writes is what a fresh writer
// decides from the same plans and sessions.
func TestFollowSessions_DecidesAgainOnlyWhereAnAddressLostOrRegainedItsSessions(t *testing.T) {
	versioned := func(s *v1.Service) *v1.Service {
		s.ResourceVersion = "1"
		return s
	}
	pools := []*v1alpha1.IPPool{
		bgpSelectors("a", nil, map[string]string{"router": "a"}, "10.0.0.0/24"),
		bgpSelectors("b", nil, map[string]string{"router": "b"}, "10.1.0.0/24"),
	}
	peers := []*v1alpha1.BGPPeer{bgpPeer("ra", map[string]string{"router": "a"}, nil), bgpPeer("rb", map[string]string{"router": "b"}, nil)}
	in := world([]string{"n1", "n2"}, pools,
		versioned(service("a1", "a", "10.0.0.1")), versioned(service("a2", "a", "10.0.0.2")),
		versioned(service("b1", "b", "10.1.0.1")), versioned(service("b2", "b", "10.1.0.2")))
	l2, notAnnounced, bgp := newPlanner().plan(in, peers)
	from := conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced, candidates: map[string]bool{"n1": true}}
	w := testWriter("n1")
	defer w.queue.ShutDown()
	w.queueConditions(from, allUp(peers, "n1", "n2"))

	const ok, down = ReasonAnnounced, ReasonNoEstablishedSession
	for _, step := range []struct {
		name    string
		up      sessions
		decided int               // Services looked at again
		want    map[string]string // reason of each Service's condition
	}{
		{"nothing changed", allUp(peers, "n1", "n2"), 0, map[string]string{"a1": ok, "a2": ok, "b1": ok, "b2": ok}},
		{"n1's session with rb is down: n2 still carries b's addresses", sessions{"ra": {"n1": true, "n2": true}, "rb": {"n2": true}},
			0, map[string]string{"a1": ok, "a2": ok, "b1": ok, "b2": ok}},
		{"rb is down on every node", sessions{"ra": {"n1": true, "n2": true}},
			2, map[string]string{"a1": ok, "a2": ok, "b1": down, "b2": down}},
		{"a session of n2 with another peer comes up", sessions{"ra": {"n1": true, "n2": true}, "rc": {"n2": true}},
			0, map[string]string{"a1": ok, "a2": ok, "b1": down, "b2": down}},
		{"rb is back on n2", sessions{"ra": {"n1": true, "n2": true}, "rb": {"n2": true}},
			2, map[string]string{"a1": ok, "a2": ok, "b1": ok, "b2": ok}},
		{"every session is down", sessions{}, 4, map[string]string{"a1": down, "a2": down, "b1": down, "b2": down}},
	} {
		w.decisions = 0
		w.followSessions(step.up)
		if w.decisions != step.decided {
			t.Errorf("%s: %d Services looked at again, want %d", step.name, w.decisions, step.decided)
		}
		for name, reason := range step.want {
			if c := w.desired[key(name)]; c.Reason != reason {
				t.Errorf("%s: %s's condition %s/%s %q, want reason %s", step.name, name, c.Status, c.Reason, c.Message, reason)
			}
		}
		fresh := testWriter("n1")
		fresh.queueConditions(from, step.up)
		fresh.queue.ShutDown()
		for k, c := range fresh.desired {
			if !svcstatus.SameCondition(&c, new(w.desired[k])) {
				t.Errorf("%s: %s: n1 writes %+v, a fresh writer %+v", step.name, k, w.desired[k], c)
			}
		}
	}

	// A node that may not write conditions (cut off) does not follow the
	// sessions either: what it decided stays until a sync lets it write.
	if err := w.Apply(context.Background(), &plans{conditions: false}); err != nil {
		t.Fatal(err)
	}
	w.decisions = 0
	w.followSessions(allUp(peers, "n1", "n2"))
	if c := w.desired[key("a1")]; w.decisions != 0 || c.Reason != down {
		t.Errorf("a node that may not write followed the sessions: %d decided, a1 %s", w.decisions, c.Reason)
	}
}

func TestSessionsOf_ReadsTheEstablishedSessionsFromBGPPeerStatus(t *testing.T) {
	peer := func(name string, nodes ...v1alpha1.BGPPeerNodeStatus) *v1alpha1.BGPPeer {
		p := bgpPeer(name, nil, nil)
		p.Status.Nodes = nodes
		return p
	}
	got := sessionsOf([]*v1alpha1.BGPPeer{
		peer("a", v1alpha1.BGPPeerNodeStatus{Node: "n1", State: "Established"}, v1alpha1.BGPPeerNodeStatus{Node: "n2", State: "Active"},
			v1alpha1.BGPPeerNodeStatus{Node: "n3", State: stateInvalid}),
		peer("b", v1alpha1.BGPPeerNodeStatus{Node: "n2", State: "Established"}),
		peer("c"),
	})
	if want := (sessions{"a": {"n1": true}, "b": {"n2": true}}); !got.equal(want) {
		t.Errorf("sessionsOf = %v, want %v", got, want)
	}
}
