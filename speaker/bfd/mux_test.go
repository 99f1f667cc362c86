package bfd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// openListeners is how many listeners m has open.
func openListeners(m *Mux) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.listeners)
}

// attachedSessions is how many sessions m's listeners serve.
func attachedSessions(m *Mux) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.listeners {
		n += len(l.sessions)
	}
	return n
}

// waitListeners waits until m has n listeners open, serving sessions
// sessions between them (a session attaches once its Run has begun).
func waitListeners(t *testing.T, m *Mux, n, sessions int) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for openListeners(m) != n || attachedSessions(m) != sessions {
		if time.Now().After(deadline) {
			t.Fatalf("%d listeners open for %d sessions after %v, want %d for %d", openListeners(m), attachedSessions(m), eventually, n, sessions)
		}
		time.Sleep(5 * ms)
	}
}

func TestMux_ListenerIsSharedAndClosesAfterItsLastSession(t *testing.T) {
	local := netip.MustParseAddr("127.0.0.2")
	m := newMux(t)
	port := freePort(t, local)
	a := start(t, m, local, netip.MustParseAddr("127.0.0.1"), port, false)
	b := start(t, m, local, netip.MustParseAddr("127.0.0.3"), port, false)
	waitListeners(t, m, 1, 2)

	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if n := openListeners(m); n != 1 {
		t.Errorf("%d listeners open while one session runs, want 1", n)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	if n := openListeners(m); n != 0 {
		t.Errorf("%d listeners open after the last session, want 0", n)
	}
}

func TestMux_CloseStopsListenersOfRunningSessions(t *testing.T) {
	local := netip.MustParseAddr("127.0.0.2")
	m := newMux(t)
	port := freePort(t, local)
	s := start(t, m, local, netip.MustParseAddr("127.0.0.1"), port, false)
	waitListeners(t, m, 1, 1)

	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(eventually):
		t.Fatalf("Close did not return within %v", eventually)
	}
	if n := openListeners(m); n != 0 {
		t.Errorf("%d listeners open after Close, want 0", n)
	}
	// The session ends without the listener Close has closed.
	if err := s.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestMux_ClosedMuxRefusesSessions(t *testing.T) {
	m := newMux(t)
	cfg := Config{Local: netip.MustParseAddr("127.0.0.2"), Peer: netip.MustParseAddr("127.0.0.1")}
	made, err := m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.New(cfg); !errors.Is(err, ErrMuxClosed) {
		t.Errorf("New after Close: %v, want ErrMuxClosed", err)
	}
	if err := made.Run(context.Background()); !errors.Is(err, ErrMuxClosed) {
		t.Errorf("Run after Close: %v, want ErrMuxClosed", err)
	}
}
