package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

func peerAt(name, addr string, edit func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := bgpPeer(name, nil, nil)
	p.Spec.Address = addr
	if edit != nil {
		edit(&p.Spec)
	}
	return p
}

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

func TestChoosePeers(t *testing.T) {
	n1 := node("n1", map[string]string{"rack": "a"}, false)
	for _, tc := range []struct {
		name    string
		peers   []*v1alpha1.BGPPeer
		chosen  []string
		refused map[string]string // name -> part of the reason
	}{
		{name: "defaults", peers: []*v1alpha1.BGPPeer{peerAt("a", "192.0.2.1", nil)}, chosen: []string{"a"}},
		{name: "sub-second keepalive",
			peers: []*v1alpha1.BGPPeer{
				peerAt("bad", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.KeepaliveTime = dur("500ms") }),
				peerAt("good", "192.0.2.2", nil),
			},
			chosen: []string{"good"}, refused: map[string]string{"bad": "keepalive time 500ms is not a positive whole number of seconds"}},
		{name: "sub-second hold time",
			peers:  []*v1alpha1.BGPPeer{peerAt("bad", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("3500ms") })},
			chosen: nil, refused: map[string]string{"bad": "hold time 3.5s"}},
		{name: "zero keepalive with a hold time of 3s",
			peers:  []*v1alpha1.BGPPeer{peerAt("bad", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.HoldTime, s.KeepaliveTime = dur("3s"), dur("0s") })},
			chosen: nil, refused: map[string]string{"bad": "must be below the hold time"}},
		{name: "two peers with one address: the first by name",
			peers: []*v1alpha1.BGPPeer{
				peerAt("zulu", "192.0.2.1", nil),
				peerAt("alpha", "192.0.2.1", nil),
				peerAt("mapped", "::ffff:192.0.2.1", nil),
				peerAt("other", "192.0.2.9", nil),
			},
			chosen:  []string{"alpha", "other"},
			refused: map[string]string{"zulu": "is also BGPPeer alpha's", "mapped": "is also BGPPeer alpha's"}},
		{name: "an invalid peer claims no address",
			peers: []*v1alpha1.BGPPeer{
				peerAt("a-bad", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.ConnectTime = dur("1500ms") }),
				peerAt("b-good", "192.0.2.1", nil),
			},
			chosen: []string{"b-good"}, refused: map[string]string{"a-bad": "connect time"}},
		{name: "other nodes' peers are neither chosen nor refused",
			peers: []*v1alpha1.BGPPeer{
				peerAt("elsewhere", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
					s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "b"}}
					s.KeepaliveTime = dur("500ms")
				}),
				peerAt("here", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
					s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
				}),
			},
			chosen: []string{"here"}},
		{name: "invalid nodeSelector",
			peers: []*v1alpha1.BGPPeer{peerAt("bad", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
				s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}
			})},
			refused: map[string]string{"bad": "invalid nodeSelector"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chosen, refused := choosePeers(tc.peers, n1, "ironlb-system")
			var names []string
			for _, c := range chosen {
				names = append(names, c.peer.Name)
			}
			if !slices.Equal(names, tc.chosen) {
				t.Errorf("chosen %v, want %v", names, tc.chosen)
			}
			if len(refused) != len(tc.refused) {
				t.Errorf("refused %v, want %v", refused, tc.refused)
			}
			for name, want := range tc.refused {
				if !strings.Contains(refused[name], want) {
					t.Errorf("refused[%s] = %q, want one containing %q", name, refused[name], want)
				}
			}
		})
	}
}

func TestChoosePeers_PasswordSecret(t *testing.T) {
	peers := []*v1alpha1.BGPPeer{
		peerAt("own", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretRef = &v1.SecretReference{Name: "pw"} }),
		peerAt("named", "192.0.2.2", func(s *v1alpha1.BGPPeerSpec) {
			s.PasswordSecretRef = &v1.SecretReference{Namespace: "other", Name: "pw2"}
		}),
		peerAt("none", "192.0.2.3", nil),
	}
	chosen, _ := choosePeers(peers, node("n1", nil, false), "ironlb-system")
	want := []secretRef{{"other", "pw2"}, {}, {"ironlb-system", "pw"}}
	for i, c := range chosen {
		if c.secret != want[i] {
			t.Errorf("%s: secret %v, want %v", c.peer.Name, c.secret, want[i])
		}
	}
}

// fakeManager records what the announcer sets; SetPeers refuses the peers
// in fail, the way bgp.Manager reports one peer's failure.
type fakeManager struct {
	mu     sync.Mutex
	fail   map[string]bool
	peers  []bgp.Peer
	routes []bgp.Route
	calls  int
}

func (f *fakeManager) SetPeers(_ context.Context, peers []bgp.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = nil
	var errs []error
	for _, p := range peers {
		if f.fail[p.Name] {
			errs = append(errs, &bgp.PeerError{Peer: p.Name, Err: fmt.Errorf("peer %s: adding the session: refused", p.Name)})
			continue
		}
		f.peers = append(f.peers, p)
	}
	return errors.Join(errs...)
}

func (f *fakeManager) SetRoutes(_ context.Context, routes []bgp.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes, f.calls = routes, f.calls+1
	return nil
}

func (f *fakeManager) Status(context.Context) map[string]bgp.PeerStatus { return nil }
func (f *fakeManager) Changes() <-chan struct{}                         { return nil }
func (f *fakeManager) Shutdown(context.Context)                         {}

// fakePasswords holds passwords by Secret, or why there is none.
type fakePasswords struct {
	pw       map[secretRef]string
	err      map[secretRef]error
	followed map[secretRef]bool
}

func (f *fakePasswords) follow(refs map[secretRef]bool) { f.followed = refs }
func (f *fakePasswords) stop()                          {}
func (f *fakePasswords) refresh(secretRef)              {}
func (f *fakePasswords) password(ref secretRef) (string, error) {
	if err := f.err[ref]; err != nil {
		return "", err
	}
	pw, ok := f.pw[ref]
	if !ok {
		return "", errPasswordPending
	}
	return pw, nil
}

func testAnnouncer(m bgpManager, pw passwordSource) *bgpAnnouncer {
	return &bgpAnnouncer{
		node: "n1", namespace: "ironlb-system", logger: klog.Background(), manager: m, passwords: pw,
		status:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		written: map[string]v1alpha1.BGPPeerNodeStatus{},
	}
}

func nodeWithIP(name, ip string) *v1.Node {
	n := node(name, nil, false)
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	return n
}

// One BGPPeer the speaker refuses (a spec, a second peer at one address,
// a session GoBGP will not add) leaves the others their sessions and
// routes, and is reported in its own status.
func TestAdvertise_RefusedPeerDoesNotStopOthers(t *testing.T) {
	peers := []*v1alpha1.BGPPeer{
		peerAt("good", "192.0.2.1", nil),
		peerAt("keepalive", "192.0.2.2", func(s *v1alpha1.BGPPeerSpec) { s.KeepaliveTime = dur("500ms") }),
		peerAt("same-address", "192.0.2.1", nil),
		peerAt("gobgp-refuses", "192.0.2.3", nil),
	}
	pool := bgpPool("b", "10.0.0.0/24")
	in := world([]string{"n1"}, []*v1alpha1.IPPool{pool}, service("s", "b", "10.0.0.1"))
	in.nodes["n1"] = nodeWithIP("n1", "172.18.0.2")
	m := &fakeManager{fail: map[string]bool{"gobgp-refuses": true}}
	b := testAnnouncer(m, &fakePasswords{})
	err := b.advertise(context.Background(), bgpPlan(in, peers), peers, in.nodes["n1"])
	if err != nil {
		t.Errorf("advertise: %v; per-peer problems belong in status", err)
	}
	if len(m.peers) != 1 || m.peers[0].Name != "good" {
		t.Errorf("sessions %v, want only good", m.peers)
	}
	if m.calls != 1 || len(m.routes) != 1 || m.routes[0].Prefix != netip.MustParsePrefix("10.0.0.1/32") || !slices.Contains(m.routes[0].Peers, "good") {
		t.Fatalf("routes %+v after %d SetRoutes, want 10.0.0.1/32 to good", m.routes, m.calls)
	}
	entries := peerEntries("n1", nil, b.problems, b.notes)
	for name, want := range map[string]string{
		"keepalive": "keepalive time 500ms", "same-address": "is also BGPPeer good's", "gobgp-refuses": "adding the session",
	} {
		if e := entries[name]; e.State != stateInvalid || e.Node != "n1" || !strings.Contains(e.Message, want) {
			t.Errorf("status of %s: %+v, want Invalid with %q", name, e, want)
		}
	}
	if _, ok := entries["good"]; ok {
		t.Errorf("good has a problem entry: %+v", entries["good"])
	}
}

// Passwords come from the reader, never from the API server during a
// sync; a Secret that cannot be read keeps an existing session's password
// and says so, and refuses only a new session.
func TestAdvertise_PasswordFromReaderKeepsLastGood(t *testing.T) {
	ref := secretRef{"ironlb-system", "pw"}
	withPW := func(name, addr string) *v1alpha1.BGPPeer {
		return peerAt(name, addr, func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretRef = &v1.SecretReference{Name: "pw"} })
	}
	n := nodeWithIP("n1", "172.18.0.2")
	m := &fakeManager{}
	pw := &fakePasswords{pw: map[secretRef]string{}, err: map[secretRef]error{}}
	b := testAnnouncer(m, pw)
	ctx := context.Background()
	sessions := func() map[string]string {
		out := map[string]string{}
		for _, p := range m.peers {
			out[p.Name] = p.Password
		}
		return out
	}

	// Not read yet: the peer waits, and no problem is reported.
	peers := []*v1alpha1.BGPPeer{withPW("old", "192.0.2.1"), peerAt("plain", "192.0.2.9", nil)}
	_ = b.advertise(ctx, nil, peers, n)
	if got := sessions(); len(got) != 1 || len(b.problems) != 0 || !pw.followed[ref] {
		t.Fatalf("before the read: sessions %v, problems %v, followed %v", got, b.problems, pw.followed)
	}
	pw.pw[ref] = "s3cret"
	_ = b.advertise(ctx, nil, peers, n)
	if got := sessions(); got["old"] != "s3cret" {
		t.Fatalf("sessions %v, want old with the password", got)
	}

	// The Secret goes bad: the existing session keeps its password; a
	// new peer naming it is refused.
	pw.err[ref] = errors.New("Secret ironlb-system/pw was deleted")
	peers = append(peers, withPW("new", "192.0.2.2"))
	_ = b.advertise(ctx, nil, peers, n)
	if got := sessions(); got["old"] != "s3cret" || got["plain"] != "" || len(got) != 2 {
		t.Errorf("sessions %v, want old (with its last password) and plain", got)
	}
	if !strings.Contains(b.problems["new"], "was deleted") || b.problems["old"] != "" {
		t.Errorf("problems %v, want new only", b.problems)
	}
	entries := peerEntries("n1", map[string]bgp.PeerStatus{"old": {State: bgp.StateEstablished}}, b.problems, b.notes)
	if e := entries["old"]; e.State != bgp.StateEstablished || !strings.Contains(e.Message, "keeps the last password") {
		t.Errorf("status of old %+v, want Established with a note", e)
	}
}

// The reader reads the Secrets it follows, by name and with get only (the
// RBAC of deploy/ grants no list or watch), and again when a session that
// uses one is not up (a rotated password), not in between.
func TestPasswordReader(t *testing.T) {
	client := fake.NewClientset(
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ironlb-system", Name: "pw"}, Data: map[string][]byte{"password": []byte("one")}},
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ironlb-system", Name: "other"}, Data: map[string][]byte{"password": []byte("wrong")}},
	)
	changed := make(chan struct{}, 10)
	w := newPasswordReader(client, "ironlb-system", func() { changed <- struct{}{} })
	w.every, w.retry = time.Hour, 0 // reads again only when asked
	defer w.stop()
	ref, missing := secretRef{"ironlb-system", "pw"}, secretRef{"ironlb-system", "nope"}
	w.follow(map[secretRef]bool{ref: true, missing: true})
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !ok() {
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("the password", func() bool { p, err := w.password(ref); return err == nil && p == "one" })
	waitFor("not found", func() bool {
		_, err := w.password(missing)
		return err != nil && strings.Contains(err.Error(), "not found")
	})

	ctx := context.Background()
	s, _ := client.CoreV1().Secrets("ironlb-system").Get(ctx, "pw", metav1.GetOptions{})
	s.Data["password"] = []byte("two")
	if _, err := client.CoreV1().Secrets("ironlb-system").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, _ := w.password(ref); p != "one" {
		t.Fatalf("password %q before a session asked for it again, want the one read", p)
	}
	w.refresh(ref) // a session that uses it went down
	waitFor("the new password", func() bool { p, err := w.password(ref); return err == nil && p == "two" })
	if err := client.CoreV1().Secrets("ironlb-system").Delete(ctx, "pw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.refresh(ref)
	waitFor("the deletion", func() bool {
		_, err := w.password(ref)
		return err != nil && strings.Contains(err.Error(), "not found")
	})
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "secrets" && a.GetVerb() != "get" && a.GetVerb() != "update" && a.GetVerb() != "delete" {
			t.Errorf("the reader asked to %s Secrets: RBAC grants get only", a.GetVerb())
		}
	}

	w.follow(nil)
	if _, err := w.password(ref); !errors.Is(err, errPasswordPending) {
		t.Errorf("after follow(nil): %v, want nothing read", err)
	}
}

func TestBFDFor(t *testing.T) {
	n := node("n1", nil, false)
	n.Status.Addresses = []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: "172.31.0.11"},
		{Type: v1.NodeInternalIP, Address: "fd31::11"},
	}
	v4, v6 := netip.MustParseAddr("172.31.0.1"), netip.MustParseAddr("fd31::1")
	source := netip.MustParseAddr("172.31.0.99")
	ms := func(d int) *metav1.Duration { return &metav1.Duration{Duration: time.Duration(d) * time.Millisecond} }
	five := int32(5)
	for _, tc := range []struct {
		name string
		spec *v1alpha1.BFDSettings
		peer bgp.Peer
		want bgp.BFD
	}{
		{"no bfd section: none", nil, bgp.Peer{Address: v4}, bgp.BFD{}},
		{"defaults, from the node's IPv4 InternalIP", &v1alpha1.BFDSettings{}, bgp.Peer{Address: v4},
			bgp.BFD{Enabled: true, Local: netip.MustParseAddr("172.31.0.11")}},
		{"an IPv6 peer, from the node's IPv6 InternalIP", &v1alpha1.BFDSettings{}, bgp.Peer{Address: v6},
			bgp.BFD{Enabled: true, Local: netip.MustParseAddr("fd31::11")}},
		{"from the session's source address", &v1alpha1.BFDSettings{}, bgp.Peer{Address: v4, SourceAddress: source},
			bgp.BFD{Enabled: true, Local: source}},
		{"timers", &v1alpha1.BFDSettings{MinReceive: ms(100), MinTransmit: ms(200), Multiplier: &five}, bgp.Peer{Address: v4},
			bgp.BFD{Enabled: true, Local: netip.MustParseAddr("172.31.0.11"), MinRx: 100 * time.Millisecond, MinTx: 200 * time.Millisecond, Multiplier: 5}},
	} {
		if got := bfdFor(tc.spec, tc.peer, n); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got := bfdFor(&v1alpha1.BFDSettings{}, bgp.Peer{Address: v6}, node("bare", nil, false)); got.Enabled {
		t.Errorf("a node without an address of the peer's family runs BFD: %+v", got)
	}
}

// TestPeerEntries_BFD: a session's BFD state reaches its BGPPeer status
// entry and the object applied; a session without BFD has none.
func TestPeerEntries_BFD(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	st := map[string]bgp.PeerStatus{
		"with":    {State: bgp.StateEstablished, BFD: &bgp.BFDStatus{State: "Down", Since: since, Message: "went down"}},
		"without": {State: bgp.StateEstablished},
	}
	entries := peerEntries("n1", st, nil, nil)
	if b := entries["with"].BFD; b == nil || b.State != "Down" || b.Message != "went down" || !b.Since.Time.Equal(since.Truncate(time.Second)) {
		t.Errorf("entry with BFD: %+v", entries["with"].BFD)
	}
	if entries["without"].BFD != nil {
		t.Errorf("entry without BFD has %+v", entries["without"].BFD)
	}
	obj := entryObject(entries["with"])
	if b, ok := obj["bfd"].(map[string]any); !ok || b["state"] != "Down" || b["message"] != "went down" || b["since"] != "2026-01-02T03:04:05Z" {
		t.Errorf("applied object: %v", obj)
	}
	if _, ok := entryObject(entries["without"])["bfd"]; ok {
		t.Error("an entry without BFD applies a bfd field")
	}
}
