package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/speaker/member"
)

var testTiming = timing{Settle: 600 * time.Millisecond, FallbackAfter: time.Second, LeaseDuration: 6 * time.Second}

// When may this node answer: the mode follows from the membership view, how
// long it has been cut off, what the other nodes' Leases say and whether it
// is catching up, and says when it changes next.
func TestMembershipMode(t *testing.T) {
	t0 := time.Unix(1000, 0)
	connected := func(since time.Duration) member.View { return member.View{ConnectedSince: t0.Add(-since)} }
	cut := member.View{Isolated: true}
	cutFor := func(d time.Duration) membershipInputs {
		return membershipInputs{View: cut, CutOffSince: t0.Add(-d), LeasesLive: true}
	}
	up := func(since time.Duration) membershipInputs {
		return membershipInputs{View: connected(since), LeasesLive: true}
	}
	with := func(in membershipInputs, change func(*membershipInputs)) membershipInputs {
		change(&in)
		return in
	}
	for _, tc := range []struct {
		name string
		in   membershipInputs
		want mode
		wake time.Time
	}{
		{"connected long ago", up(time.Minute), modeHeartbeats, time.Time{}},
		{"just connected: joining", up(100 * time.Millisecond), modeJoining, t0.Add(500 * time.Millisecond)},
		{"joined exactly: settling", up(600 * time.Millisecond), modeSettling, t0.Add(600 * time.Millisecond)},
		{"joined, word of it crossing: settling", up(900 * time.Millisecond), modeSettling, t0.Add(300 * time.Millisecond)},
		{"settled exactly", up(1200 * time.Millisecond), modeHeartbeats, time.Time{}},
		{"just cut off", cutFor(0), modeCutOff, t0.Add(7 * time.Second)},
		{"cut off, renewing, waiting for the others' Leases", cutFor(3 * time.Second), modeCutOff, t0.Add(4 * time.Second)},
		{"cut off long enough, nobody hears the heartbeats: fallback", cutFor(7 * time.Second), modeFallback, time.Time{}},
		{"cut off for an hour: still fallback", cutFor(time.Hour), modeFallback, time.Time{}},
		{"cut off long enough, others hear the heartbeats: silent",
			with(cutFor(7*time.Second), func(in *membershipInputs) { in.OthersHeard = true }), modeCutOff, time.Time{}},
		{"connected, others standing by: heartbeats",
			with(up(time.Minute), func(in *membershipInputs) { in.OthersHeard = true }), modeHeartbeats, time.Time{}},
		{"cut off long enough, but its own Lease does not come back: silent",
			with(cutFor(7*time.Second), func(in *membershipInputs) { in.LeasesLive = false }), modeCutOff, time.Time{}},
		{"connected, another node still in the fallback: settling until its Lease says otherwise",
			with(up(time.Minute), func(in *membershipInputs) { in.OthersInFallback = true }), modeSettling, time.Time{}},
		{"connected a while ago, but catching up: joining until then",
			with(up(time.Minute), func(in *membershipInputs) { in.CatchUpUntil = t0.Add(2 * time.Second) }), modeJoining, t0.Add(2 * time.Second)},
		{"caught up a moment ago: settling for a Settle from then",
			with(up(time.Minute), func(in *membershipInputs) { in.CatchUpUntil = t0.Add(-100 * time.Millisecond) }), modeSettling, t0.Add(500 * time.Millisecond)},
		{"caught up long ago: heartbeats",
			with(up(time.Minute), func(in *membershipInputs) { in.CatchUpUntil = t0.Add(-time.Second) }), modeHeartbeats, time.Time{}},
		{"cut off again while catching up: cut off",
			with(cutFor(0), func(in *membershipInputs) { in.CatchUpUntil = t0.Add(2 * time.Second) }), modeCutOff, t0.Add(7 * time.Second)},
	} {
		got, wake := membershipMode(tc.in, t0, testTiming)
		if got != tc.want || !wake.Equal(tc.wake) {
			t.Errorf("%s: mode %s wake %v, want %s wake %v", tc.name, got, wake, tc.want, tc.wake)
		}
	}
}

// What a node's Lease says: cut off or standby while it renews, and
// fallback from entering the fallback until the sync after it left.
func TestLeaseSays(t *testing.T) {
	cut, connected := member.View{Isolated: true}, member.View{}
	for _, tc := range []struct {
		name         string
		view         member.View
		md, lastMode mode
		renews       bool
		want         string
	}{
		{"at rest", connected, modeHeartbeats, modeHeartbeats, false, heartbeatsOK},
		{"another node cut off: standby", connected, modeHeartbeats, modeHeartbeats, true, heartbeatsStandby},
		{"cut off, renewing", cut, modeCutOff, modeCutOff, true, heartbeatsCutOff},
		{"entering the fallback: before answering by the Leases", cut, modeFallback, modeCutOff, true, heartbeatsFallback},
		{"in the fallback", cut, modeFallback, modeFallback, true, heartbeatsFallback},
		{"left the fallback (a standby Lease): until the next sync", cut, modeCutOff, modeFallback, true, heartbeatsFallback},
		{"the sync after: cut off", cut, modeCutOff, modeCutOff, true, heartbeatsCutOff},
		{"heartbeats back after the fallback: until the next sync", connected, modeSettling, modeFallback, false, heartbeatsFallback},
		{"joining after the fallback: until the next sync", connected, modeJoining, modeFallback, false, heartbeatsFallback},
	} {
		if got := leaseSays(tc.view, tc.md, tc.lastMode, tc.renews); got != tc.want {
			t.Errorf("%s: Lease says %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The other nodes' Leases as this node reads them: a fallback Lease is a
// cut-off one too.
func TestLeaseStates(t *testing.T) {
	now := time.Now()
	l := &leases{node: "self", duration: 6 * time.Second, observed: map[string]observedLease{
		"a": {heartbeats: heartbeatsFallback, seen: now.Add(-time.Second)},
		"b": {heartbeats: heartbeatsCutOff, seen: now.Add(-time.Second)},
		"c": {heartbeats: heartbeatsStandby, seen: now.Add(-time.Second)},
		"d": {heartbeats: heartbeatsFallback, seen: now.Add(-7 * time.Second)},
		"e": {heartbeats: heartbeatsOK, seen: now.Add(-time.Second)},
	}}
	want := map[string]leaseState{
		"a": {Fresh: true, CutOff: true, Fallback: true},
		"b": {Fresh: true, CutOff: true},
		"c": {Fresh: true, Standby: true},
		"d": {},
		"e": {},
	}
	if got := l.states(now); !maps.Equal(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
}

// A speaker writes Lease renewals only in the fallback: when it is cut off
// for FallbackAfter, or when another speaker is and needs to see it.
func TestRenewsLease(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name         string
		view         member.View
		cutOffSince  time.Time
		othersCutOff bool
		want         bool
	}{
		{"at rest: never", member.View{ConnectedSince: t0}, time.Time{}, false, false},
		{"cut off briefly: not yet", member.View{Isolated: true}, t0.Add(-500 * time.Millisecond), false, false},
		{"cut off for FallbackAfter", member.View{Isolated: true}, t0.Add(-time.Second), false, true},
		{"another is cut off", member.View{ConnectedSince: t0}, time.Time{}, true, true},
	} {
		if got := renewsLease(tc.view, tc.cutOffSince, t0, testTiming, tc.othersCutOff); got != tc.want {
			t.Errorf("%s: renews %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Who may own addresses: while the heartbeats decide, the members they show
// alive and not isolated, whatever the Leases say; in the fallback, the
// nodes with fresh Leases.
func TestAliveNodes(t *testing.T) {
	view := member.View{Alive: map[string]member.Peer{
		"a": {Direct: true}, "b": {}, "deaf": {Isolated: true},
	}}
	leases := map[string]leaseState{
		"cut":   {Fresh: true, CutOff: true},
		"stale": {},
		"deaf":  {Fresh: true, CutOff: true},
		"b":     {Fresh: true, Standby: true},
	}
	if got, want := aliveNodes("a", modeHeartbeats, view, leases), map[string]bool{"a": true, "b": true}; !maps.Equal(got, want) {
		t.Errorf("heartbeats: alive = %v, want %v", got, want)
	}
	if got, want := aliveNodes("cut", modeFallback, member.View{Isolated: true}, leases), map[string]bool{"cut": true, "deaf": true, "b": true}; !maps.Equal(got, want) {
		t.Errorf("fallback: alive = %v, want %v", got, want)
	}
	if got := aliveNodes("alone", modeHeartbeats, member.View{}, nil); !maps.Equal(got, map[string]bool{"alone": true}) {
		t.Errorf("a node alone = %v", got)
	}
}

// The writer of a Service's condition is ranked among the live members; a
// speaker outside the membership never writes while there are members (it
// sees nobody alive); with no members every speaker may.
func TestConditionWriters(t *testing.T) {
	speakers := map[string]bool{"a": true, "b": true, "outside": true}
	alive := map[string]bool{"a": true, "b": true}
	members := member.View{Members: 2, Alive: map[string]member.Peer{"a": {Direct: true}, "b": {Direct: true}}}
	for _, tc := range []struct {
		name string
		self string
		view member.View
		want map[string]bool
	}{
		{"a member: the live members", "a", members, alive},
		{"outside the membership: none", "outside", members, map[string]bool{}},
		{"a member cut off still counts itself", "a", member.View{Members: 2, Alive: map[string]member.Peer{"a": {Isolated: true}}}, alive},
		{"no members: every speaker", "outside", member.View{}, speakers},
		{"no members, no Lease seen yet: itself", "new", member.View{}, map[string]bool{"a": true, "b": true, "outside": true, "new": true}},
	} {
		if got := conditionWriters(tc.self, tc.view, alive, speakers); !maps.Equal(got, tc.want) {
			t.Errorf("%s: writers = %v, want %v", tc.name, got, tc.want)
		}
	}
	if speakers["new"] {
		t.Error("conditionWriters changed the speakers it was given")
	}
}

// An address stays with the node recorded as answering it while that node
// is eligible; only then does the ranking decide.
func TestOwnerOfIsSticky(t *testing.T) {
	eligible := map[string]bool{"n1": true, "n2": true, "n3": true}
	ranked := rank("10.0.0.1", eligible)
	other := "n1"
	if other == ranked {
		other = "n2"
	}
	for _, tc := range []struct {
		name     string
		recorded string
		want     string
		eligible map[string]bool
	}{
		{"nothing recorded: ranking", "", ranked, eligible},
		{"the recorded node keeps it", other, other, eligible},
		{"the recorded node is no longer eligible: ranking", other, rank("10.0.0.1", without(eligible, other)), without(eligible, other)},
		{"the recorded node is unknown: ranking", "gone", ranked, eligible},
		{"no eligible node", other, "", map[string]bool{}},
	} {
		if got := ownerOf("10.0.0.1", tc.eligible, tc.recorded); got != tc.want {
			t.Errorf("%s: owner %q, want %q", tc.name, got, tc.want)
		}
	}
}

func without(set map[string]bool, drop string) map[string]bool {
	out := maps.Clone(set)
	delete(out, drop)
	return out
}

func TestMayAnswer(t *testing.T) {
	for _, tc := range []struct {
		m                mode
		owned, answering bool
		want             bool
	}{
		{modeHeartbeats, true, false, true},
		{modeHeartbeats, false, true, false},
		{modeFallback, true, false, true},
		{modeSettling, true, true, true},
		{modeSettling, true, false, false},
		{modeJoining, true, true, false},
		{modeJoining, true, false, false},
		{modeCutOff, true, true, false},
	} {
		if got := mayAnswer(tc.m, tc.owned, tc.answering); got != tc.want {
			t.Errorf("mayAnswer(%s, owned=%v, answering=%v) = %v, want %v", tc.m, tc.owned, tc.answering, got, tc.want)
		}
	}
}

// A node that comes back takes nothing back: the owner named in the
// Announced condition keeps the address while it is eligible, across a
// whole plan of many addresses, and the returning node gets only addresses
// whose owner left.
func TestPlanReturningNodeTakesNothingBack(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	var svcs []*v1.Service
	for i := range 40 {
		svcs = append(svcs, service(fmt.Sprintf("s%d", i), "p", fmt.Sprintf("10.0.0.%d", i+1)))
	}
	pools := []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24")}

	// n4 is away: the others own everything, and say so.
	away := world(nodes[:3], pools, svcs...)
	away.nodes["n4"] = node("n4", nil, false)
	before, _ := l2Plan(away)
	for _, svc := range svcs {
		c := announcedCondition(cached(svc), before, nil, nil, "", "")
		svc.Status.Conditions = []metav1.Condition{*c}
	}

	back := world(nodes, pools, svcs...)
	back.recorded = map[netip.Addr]string{}
	for _, svc := range svcs {
		maps.Copy(back.recorded, announcedOwners(cached(svc)))
	}
	after, _ := l2Plan(back)
	for addr, a := range after {
		if a.owner != before[addr].owner {
			t.Errorf("%s moved from %s to %s when n4 came back", addr, before[addr].owner, a.owner)
		}
	}

	// Without the record, the ranking would have given n4 about a quarter.
	fresh, _ := l2Plan(world(nodes, pools, svcs...))
	moved := 0
	for addr, a := range fresh {
		if a.owner != before[addr].owner {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("the ranking gives n4 nothing either: the test shows nothing")
	}
}

// The record of owners round-trips through the condition the speakers write.
func TestAnnouncedOwners(t *testing.T) {
	svc := service("s", "p", "10.0.0.1", "fd00::1")
	plan := planOf(ann("10.0.0.1", "worker-017.k8s.example.internal", "eth0"), ann("fd00::1", "n2", "eth0", "eth1"))
	c := announcedCondition(cached(svc), plan, nil, nil, "", "heartbeats do not flow between x and the other speakers")
	svc.Status.Conditions = []metav1.Condition{*c}
	got := announcedOwners(cached(svc))
	want := map[netip.Addr]string{netip.MustParseAddr("10.0.0.1"): "worker-017.k8s.example.internal", netip.MustParseAddr("fd00::1"): "n2"}
	if !maps.Equal(got, want) {
		t.Errorf("owners = %v, want %v (message %q)", got, want, c.Message)
	}
	if c.Reason != ReasonHeartbeatsBroken || !strings.Contains(c.Message, "heartbeats do not flow") {
		t.Errorf("degraded condition = %s %q", c.Reason, c.Message)
	}
	if got := announcedOwners(cached(service("t", "p", "10.0.0.2"))); len(got) != 0 {
		t.Errorf("no condition: owners %v", got)
	}
}

// The condition names the nodes cut off from the heartbeats, or says that
// they reach nobody when this node is in the fallback.
func TestDegradedNote(t *testing.T) {
	view := member.View{Alive: map[string]member.Peer{"a": {}, "deaf": {Isolated: true}}}
	leases := map[string]leaseState{"cut": {Fresh: true, CutOff: true}, "deaf": {Fresh: true, CutOff: true}, "a": {Fresh: true, Standby: true}, "old": {}}
	got := degradedNote("a", modeHeartbeats, view, leases, 7947)
	if !strings.Contains(got, "between cut, deaf and the other speakers (UDP 7947): those answer nothing") {
		t.Errorf("note = %q", got)
	}
	if got := degradedNote("a", modeHeartbeats, view, map[string]leaseState{"old": {}}, 7947); got != "" {
		t.Errorf("note with heartbeats flowing = %q", got)
	}
	if got := degradedNote("a", modeFallback, view, nil, 7947); !strings.Contains(got, "reach no speaker (UDP 7947), a included") {
		t.Errorf("note in fallback = %q", got)
	}
}

// Only nodes that may announce for some L2 pool take part in the heartbeats.
func TestL2Candidates(t *testing.T) {
	nodes := []*v1.Node{
		node("edge1", map[string]string{"edge": "true"}, false),
		node("edge2", map[string]string{"edge": "true", LabelExcludeFromLB: ""}, false),
		node("worker", nil, false),
	}
	names := func(ns []*v1.Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	edgeOnly := []*v1alpha1.IPPool{l2Pool("p", nil, map[string]string{"edge": "true"}, "10.0.0.0/24"), pool("bgp", "10.1.0.0/24")}
	if got := names(l2Candidates(nodes, edgeOnly)); fmt.Sprint(got) != "[edge1]" {
		t.Errorf("candidates of an edge-only pool = %v, want [edge1]", got)
	}
	if got := names(l2Candidates(nodes, []*v1alpha1.IPPool{pool("bgp", "10.1.0.0/24")})); len(got) != 0 {
		t.Errorf("candidates with no L2 pool = %v", got)
	}
	if got := names(l2Candidates(nodes, []*v1alpha1.IPPool{l2Pool("all", nil, nil, "10.0.0.0/24")})); fmt.Sprint(got) != "[edge1 worker]" {
		t.Errorf("candidates of a pool for every node = %v", got)
	}
}

// Two nodes answer one address (a partition healed, or one was cut off and
// could not stop at once): each computes the plan with its own claim, and
// both pick the node the condition records, so one of them stops.
func TestPlanTwoAnsweringAgreeOnOne(t *testing.T) {
	svc := service("web", "p", "10.0.0.1")
	pools := []*v1alpha1.IPPool{l2Pool("p", nil, nil, "10.0.0.0/24")}
	addr := netip.MustParseAddr("10.0.0.1")
	owners := map[string]string{}
	for _, self := range []string{"n1", "n3"} {
		in := world([]string{"n1", "n2", "n3"}, pools, svc)
		in.self = self
		in.recorded = map[netip.Addr]string{addr: "n1"}
		plan, _ := l2Plan(in)
		owners[self] = plan[addr].owner
	}
	if owners["n1"] != "n1" || owners["n3"] != "n1" {
		t.Errorf("owners as n1 and n3 see them: %v, want n1 for both", owners)
	}
}

// The gate before every reply: the process kept running, the Lease is not
// overdue, and the peers hear this node or the Leases decide.
func TestMayReply(t *testing.T) {
	for _, tc := range []struct {
		name                                  string
		answerable, leaseOK, heard, viaLeases bool
		want                                  bool
	}{
		{"heartbeats flow", true, true, true, false, true},
		{"not heard (heartbeats stopped): silent before the peers take over", true, true, false, false, false},
		{"fallback: the Leases decide", true, true, false, true, true},
		{"fallback with its Lease overdue (writes fail)", true, false, false, true, false},
		{"heard, but a Lease the fallback node relies on is overdue", true, false, true, false, false},
		{"paused for a lapse", false, true, true, false, false},
		{"paused in the fallback", false, true, false, true, false},
	} {
		if got := mayReply(tc.answerable, tc.leaseOK, tc.heard, tc.viaLeases); got != tc.want {
			t.Errorf("%s: mayReply = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A Lease is overdue while it must be renewed and was not for two thirds of
// its duration, counted from the last renewal or from when renewing began.
func TestLeaseFenced(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := 6 * time.Second
	for _, tc := range []struct {
		name               string
		heartbeats         string
		renewFrom, renewed time.Time
		now                time.Time
		want               bool
	}{
		{"not renewing: never", heartbeatsOK, time.Time{}, time.Time{}, t0, false},
		{"renewing just began", heartbeatsCutOff, t0, time.Time{}, t0.Add(time.Second), false},
		{"renewing began 4 s ago, never renewed", heartbeatsStandby, t0, time.Time{}, t0.Add(4 * time.Second), true},
		{"renewed 2 s ago", heartbeatsCutOff, t0, t0.Add(3 * time.Second), t0.Add(5 * time.Second), false},
		{"last renewed 4 s ago", heartbeatsCutOff, t0, t0.Add(time.Second), t0.Add(5 * time.Second), true},
	} {
		l := &leases{duration: d, wantHeartbeats: tc.heartbeats, renewFrom: tc.renewFrom, renewed: tc.renewed}
		l.refence()
		if got := l.fenced(tc.now); got != tc.want {
			t.Errorf("%s: fenced = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Back from being cut off, a node settles until its Services cache has moved
// on, at most a while.
func TestCatchingUp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name               string
		returned, caughtUp time.Time
		want               time.Time
	}{
		{"never cut off", time.Time{}, time.Time{}, time.Time{}},
		{"back, cache unchanged: until the bound", t0, time.Time{}, t0.Add(6 * time.Second)},
		{"back, cache moved on: until then", t0, t0.Add(300 * time.Millisecond), t0.Add(300 * time.Millisecond)},
		{"back, cache moved on after the bound: the bound", t0, t0.Add(9 * time.Second), t0.Add(6 * time.Second)},
	} {
		if got := catchingUp(tc.returned, 6*time.Second, tc.caughtUp); !got.Equal(tc.want) {
			t.Errorf("%s: catchingUp = %v, want %v", tc.name, got, tc.want)
		}
	}
}
