package bfd

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/ipv4"
	"k8s.io/klog/v2/ktesting"
)

// eventually bounds every wait: coming Up takes one or two packets at the
// 1 s rate of sessions that are not Up; the bound is generous so a loaded
// machine with -race passes.
const eventually = 10 * time.Second

// fast are the timers of the tests' sessions: 150 ms detection once Up.
var fast = Config{MinRx: 50 * ms, MinTx: 50 * ms, Multiplier: 3}

// freePort is a UDP port that was free on addr a moment ago.
func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	c, err := net.ListenUDP(network(addr), net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Skipf("no %s on loopback: %v", addr, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

// newMux returns a Mux of the test's own, closed when the test ends.
func newMux(t *testing.T) *Mux {
	t.Helper()
	m := NewMux(ktesting.NewLogger(t, ktesting.NewConfig()))
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// upPair starts sessions a (from x to y) and b (from y to x) on one Mux
// and a free port, and waits until both are Up. The detection and transmit
// times themselves are the machine's tests' business (machine_test.go): no
// test here times the wall clock.
func upPair(t *testing.T, x, y netip.Addr) (*Mux, *running, *running) {
	t.Helper()
	m := newMux(t)
	port := freePort(t, x)
	a := start(t, m, x, y, port, false)
	b := start(t, m, y, x, port, false)
	waitChange(t, a.Session, "a Up", isUp)
	waitChange(t, b.Session, "b Up", isUp)
	return m, a, b
}

type running struct {
	*Session
	cancel context.CancelFunc
	stop   func() error // cancels and returns what Run returned
}

// start runs a session of m from local to peer on port until the test
// ends.
func start(t *testing.T, m *Mux, local, peer netip.Addr, port uint16, multihop bool) *running {
	t.Helper()
	cfg := fast
	cfg.Local, cfg.Peer, cfg.Multihop = local, peer, multihop
	s, err := m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.port, s.peerPort = port, port
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	r := &running{Session: s, cancel: cancel, stop: sync.OnceValue(func() error {
		cancel()
		return <-ran
	})}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// waitChange reads s's changes until want holds for one and returns it.
func waitChange(t *testing.T, s *Session, what string, want func(Change) bool) Change {
	t.Helper()
	deadline := time.After(eventually)
	var seen []Change
	for {
		select {
		case c, ok := <-s.Changes():
			if !ok {
				t.Fatalf("%s: session ended; changes seen: %+v", what, seen)
			}
			if want(c) {
				return c
			}
			seen = append(seen, c)
		case <-deadline:
			t.Fatalf("%s: not within %v; changes seen: %+v", what, eventually, seen)
		}
	}
}

func isUp(c Change) bool { return c.State == Up }

// loopbackPairs are the ends of the tests' sessions: two IPv4 addresses
// with a listener each, and IPv6's one loopback address, where both
// sessions share a listener.
var loopbackPairs = []struct {
	name string
	a, b netip.Addr
}{
	{"IPv4", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")},
	{"IPv6", netip.MustParseAddr("::1"), netip.MustParseAddr("::1")},
}

func TestSession_StoppedPeerIsDetectedWithDiag1(t *testing.T) {
	for _, tc := range loopbackPairs {
		t.Run(tc.name, func(t *testing.T) {
			m, a, b := upPair(t, tc.a, tc.b)

			if tc.a != tc.b { // IPv6's sessions share one peer label
				if up := testutil.ToFloat64(m.metrics.sessionUp.WithLabelValues(tc.a.String())); up != 1 {
					t.Errorf("session_up{peer=%q} = %v while Up, want 1", tc.a, up)
				}
			}
			a.cancel()
			c := waitChange(t, b.Session, "b Down", func(c Change) bool { return c.State == Down })
			if c.Diag != DiagDetectionTimeExpired || c.RemoteAdminDown {
				t.Errorf("b went Down with %+v, want diag 1 and no remote AdminDown", c)
			}
			if b.State() != Down {
				t.Errorf("State() %s, want Down", b.State())
			}
			if tc.a != tc.b {
				if up := testutil.ToFloat64(m.metrics.sessionUp.WithLabelValues(tc.a.String())); up != 0 {
					t.Errorf("session_up{peer=%q} = %v while Down, want 0", tc.a, up)
				}
				if n := testutil.ToFloat64(m.metrics.stateChanges.WithLabelValues(tc.a.String(), "Down")); n < 1 {
					t.Errorf("state_changes_total{peer=%q,state=Down} = %v, want at least 1", tc.a, n)
				}
			}
		})
	}
}

func TestSession_ShutdownTellsPeerItIsAdministrativelyDown(t *testing.T) {
	for _, tc := range loopbackPairs {
		t.Run(tc.name, func(t *testing.T) {
			_, a, b := upPair(t, tc.a, tc.b)

			ctx, cancel := context.WithTimeout(context.Background(), eventually)
			defer cancel()
			if err := a.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			c := waitChange(t, b.Session, "b Down", func(c Change) bool { return c.State == Down })
			if c.Diag != DiagNeighborSignaledDown || !c.RemoteAdminDown {
				t.Errorf("b went Down with %+v, want diag 3 and remote AdminDown", c)
			}
			own := waitChange(t, a.Session, "a AdminDown", func(c Change) bool { return c.State == AdminDown })
			if own.Diag != DiagAdministrativelyDown {
				t.Errorf("a went AdminDown with diag %s, want 7", own.Diag)
			}
			// b stays Down without counting a failure later.
			select {
			case c, ok := <-b.Changes():
				if ok && c.Diag == DiagDetectionTimeExpired {
					t.Errorf("b reported a failure after the shutdown: %+v", c)
				}
			case <-time.After(500 * ms):
			}
		})
	}
}

func TestSession_SetTimersWhileUpKeepsSessionUp(t *testing.T) {
	tc := loopbackPairs[0]
	_, a, b := upPair(t, tc.a, tc.b)
	a.SetTimers(200*ms, 200*ms, 5)
	b.SetTimers(20*ms, 20*ms, 3)
	select {
	case c := <-b.Changes():
		t.Errorf("b changed after the timers changed: %+v", c)
	case c := <-a.Changes():
		t.Errorf("a changed after the timers changed: %+v", c)
	case <-time.After(1500 * ms):
	}
}

// sendFrom sends p to addr:port from a socket with the given TTL.
func sendFrom(t *testing.T, from, to netip.Addr, port uint16, ttl int, p Packet) {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ipv4.NewConn(c).SetTTL(ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort(p.Marshal(), netip.AddrPortFrom(to, port)); err != nil {
		t.Fatal(err)
	}
}

func TestSession_TTLCheckOnlyForSingleHop(t *testing.T) {
	peerAddr, local := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	hello := Packet{Version: 1, State: Down, DetectMult: 3, MyDiscr: 77, DesiredMinTx: time.Second, RequiredMinRx: 50 * ms}
	for _, tc := range []struct {
		name     string
		multihop bool
		ttl      int
		wantInit bool
	}{
		{"single hop, TTL 64: dropped", false, 64, false},
		{"single hop, TTL 255: accepted", false, 255, true},
		{"multihop, TTL 64: accepted", true, 64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t)
			port := freePort(t, local)
			s := start(t, m, local, peerAddr, port, tc.multihop)
			droppedBefore := testutil.ToFloat64(m.metrics.packetsDropped.WithLabelValues(string(ReasonTTL)))
			deadline := time.Now().Add(eventually)
			if !tc.wantInit {
				deadline = time.Now().Add(time.Second)
			}
			for time.Now().Before(deadline) {
				sendFrom(t, peerAddr, local, port, tc.ttl, hello)
				select {
				case c := <-s.Changes():
					if !tc.wantInit {
						t.Fatalf("changed to %+v on a packet with TTL %d", c, tc.ttl)
					}
					if c.State != Init {
						t.Fatalf("changed to %+v, want Init", c)
					}
					return
				case <-time.After(50 * ms):
				}
			}
			if tc.wantInit {
				t.Fatalf("no Init within %v", eventually)
			}
			if d := testutil.ToFloat64(m.metrics.packetsDropped.WithLabelValues(string(ReasonTTL))) - droppedBefore; d < 1 {
				t.Errorf("TTL drops counted: %v, want at least 1", d)
			}
		})
	}
}

func TestSession_PacketsOfUnknownDiscriminatorsAreDropped(t *testing.T) {
	peerAddr, local := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	m := newMux(t)
	port := freePort(t, local)
	s := start(t, m, local, peerAddr, port, false)
	before := testutil.ToFloat64(m.metrics.packetsDropped.WithLabelValues(string(ReasonNoSession)))
	stray := Packet{Version: 1, State: Up, DetectMult: 3, MyDiscr: 77, YourDiscr: 12345, DesiredMinTx: 50 * ms, RequiredMinRx: 50 * ms}
	deadline := time.Now().Add(eventually)
	for testutil.ToFloat64(m.metrics.packetsDropped.WithLabelValues(string(ReasonNoSession))) == before {
		if time.Now().After(deadline) {
			t.Fatalf("no drop counted within %v", eventually)
		}
		if s.discrFor() == stray.YourDiscr {
			t.Skip("the session drew the stray discriminator")
		}
		sendFrom(t, peerAddr, local, port, 255, stray)
		time.Sleep(20 * ms)
	}
	if s.State() != Down {
		t.Errorf("state %s after a stray packet, want Down", s.State())
	}
}

func (s *Session) discrFor() uint32 {
	s.mux.mu.Lock()
	defer s.mux.mu.Unlock()
	return s.discr
}

func TestNew_RejectsMissingPeerAndMixedFamilies(t *testing.T) {
	m := newMux(t)
	for _, cfg := range []Config{
		{},
		{Peer: netip.IPv4Unspecified()},
		{Peer: netip.MustParseAddr("192.0.2.1"), Local: netip.MustParseAddr("2001:db8::1")},
	} {
		if _, err := m.New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

func TestShutdown_BeforeRunReturnsAtOnce(t *testing.T) {
	s, err := newMux(t).New(Config{Peer: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// rawPeer is a socket that plays the peer by hand and sees each packet's
// TTL and source.
type rawPeer struct {
	p *ipv4.PacketConn
}

func listenRaw(t *testing.T, addr netip.Addr, port uint16) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	return &rawPeer{p: p}
}

// next returns the next packet, its TTL and its source, or fails the test.
func (r *rawPeer) next(t *testing.T, within time.Duration) (Packet, int, netip.AddrPort) {
	t.Helper()
	b := make([]byte, 100)
	r.p.SetReadDeadline(time.Now().Add(within))
	n, cm, src, err := r.p.ReadFrom(b)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	p, err := Parse(b[:n])
	if err != nil {
		t.Fatalf("session sent an invalid packet: %v", err)
	}
	return p, cm.TTL, src.(*net.UDPAddr).AddrPort()
}

func TestSession_SendsFromHighPortWithTTL255AndShutdownRepeatsAdminDown(t *testing.T) {
	peerAddr, local := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	port := freePort(t, peerAddr)
	raw := listenRaw(t, peerAddr, port)
	s := start(t, newMux(t), local, peerAddr, port, false)

	p, ttl, src := raw.next(t, eventually)
	if ttl != 255 || src.Port() < 49152 || src.Addr() != local {
		t.Errorf("first packet from %s with TTL %d, want from %s port 49152-65535 with TTL 255", src, ttl, local)
	}
	if p.State != Down || p.YourDiscr != 0 || p.DesiredMinTx != time.Second || p.RequiredMinRx != fast.MinRx || p.DetectMult != fast.Multiplier {
		t.Errorf("first packet %+v, want Down, your discr 0, 1s tx, the configured rx and multiplier", p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	adminDown := 0
	for range 10 {
		b := make([]byte, 100)
		raw.p.SetReadDeadline(time.Now().Add(500 * ms))
		n, _, _, err := raw.p.ReadFrom(b)
		if err != nil {
			break
		}
		if q, err := Parse(b[:n]); err == nil && q.State == AdminDown && q.Diag == DiagAdministrativelyDown {
			adminDown++
		}
	}
	if adminDown != shutdownCopies {
		t.Errorf("Shutdown sent %d AdminDown packets, want %d", adminDown, shutdownCopies)
	}
}
