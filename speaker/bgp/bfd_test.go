package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/ironlb/ironlb/speaker/bfd"
)

func TestBFDFailed(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    bfd.Change
		want bool
	}{
		{"detection time expired", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagDetectionTimeExpired}, true},
		{"the peer no longer hears us", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagNeighborSignaledDown, RemoteDiag: bfd.DiagDetectionTimeExpired}, true},
		{"the peer says the path is down", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagNeighborSignaledDown, RemoteDiag: bfd.Diag(5)}, true},
		{"the peer stopped it on purpose", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagNeighborSignaledDown, RemoteAdminDown: true}, false},
		{"the peer tore its session down (FRR re-registering it)", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagNeighborSignaledDown, RemoteDiag: bfd.DiagNeighborSignaledDown}, false},
		{"the peer began a new session", bfd.Change{From: bfd.Up, State: bfd.Down, Diag: bfd.DiagNeighborSignaledDown, RemoteDiag: bfd.DiagNone}, false},
		{"never came up", bfd.Change{From: bfd.Init, State: bfd.Down, Diag: bfd.DiagDetectionTimeExpired}, false},
		{"coming up", bfd.Change{From: bfd.Init, State: bfd.Up}, false},
		{"we stopped it", bfd.Change{From: bfd.Up, State: bfd.AdminDown, Diag: bfd.DiagAdministrativelyDown}, false},
	} {
		if got := failed(tc.c); got != tc.want {
			t.Errorf("%s: failed = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// TestBFDSessions runs the sessions of one node against a router played by
// a second Mux on loopback (127.0.0.1 and 127.0.0.2, port 3784): the
// session comes Up; new timers keep it; the router's planned stop resets
// nothing; the router's silent death resets the BGP session; a peer no
// longer wanted is told the session is administratively down.
func TestBFDSessions(t *testing.T) {
	node, router := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	logger := ktesting.NewLogger(t, ktesting.NewConfig())
	nodeMux, routerMux := bfd.NewMux(logger), bfd.NewMux(logger)
	defer nodeMux.Close()
	defer routerMux.Close()
	resets := make(chan netip.Addr, 10)
	b := newBFDSessions(nodeMux, logger, func(peer netip.Addr, why string) { resets <- peer }, func() {})
	ctx := context.Background()
	defer b.shutdown(ctx)

	fast := BFD{Enabled: true, Local: node, MinRx: 50 * time.Millisecond, MinTx: 50 * time.Millisecond, Multiplier: 3}
	b.set(ctx, map[string]bfdWant{"r": {peer: router, settings: fast}})
	startRouter := func() (*bfd.Session, context.CancelFunc) {
		t.Helper()
		s, err := routerMux.New(bfd.Config{Local: router, Peer: node, MinRx: 50 * time.Millisecond, MinTx: 50 * time.Millisecond, Multiplier: 3})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		go func() { _ = s.Run(rctx) }()
		return s, cancel
	}
	waitState := func(what, state, message string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st := b.status()["r"]
			if st.State == state && strings.Contains(st.Message, message) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v, want %s with %q", what, st, state, message)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	noReset := func(what string) {
		t.Helper()
		select {
		case p := <-resets:
			t.Fatalf("%s: the BGP session with %s was reset", what, p)
		case <-time.After(500 * time.Millisecond): // over three detection times
		}
	}

	waitState("before the router runs BFD", "Down", "does the router run BFD")
	routerSession, stopRouter := startRouter()
	waitState("with the router", "Up", "")

	b.mu.Lock()
	before := b.runs["r"].session
	b.mu.Unlock()
	slower := fast
	slower.MinRx = 80 * time.Millisecond
	b.set(ctx, map[string]bfdWant{"r": {peer: router, settings: slower}})
	b.mu.Lock()
	after := b.runs["r"].session
	b.mu.Unlock()
	if before != after {
		t.Fatal("new timers replaced the session instead of polling with them")
	}
	noReset("new timers")
	waitState("after new timers", "Up", "")

	if err := routerSession.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	stopRouter()
	waitState("the router's planned stop", "Down", "administratively down")
	noReset("the router's planned stop")

	_, stopRouter = startRouter()
	waitState("the router back", "Up", "")
	stopRouter() // silent: as if it died
	select {
	case p := <-resets:
		if p != router {
			t.Fatalf("reset %s, want %s", p, router)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the router died and the BGP session was not reset")
	}
	waitState("the router's death", "Down", "went down")

	// A peer no longer wanted: the router hears AdminDown.
	routerSession, stopRouter = startRouter()
	defer stopRouter()
	waitState("the router back again", "Up", "")
	b.set(ctx, map[string]bfdWant{})
	deadline := time.Now().Add(10 * time.Second)
	for routerSession.State() == bfd.Up {
		if time.Now().After(deadline) {
			t.Fatal("the router's session stayed Up after the peer was removed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	noReset("the peer removed")
	if _, ok := b.status()["r"]; ok {
		t.Error("a removed peer still has a BFD status")
	}
}
