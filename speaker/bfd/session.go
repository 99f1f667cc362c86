package bfd

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// Ports of RFC 5881 §4 and RFC 5883 §5.
const (
	PortSingleHop = 3784
	PortMultihop  = 4784
)

// Defaults for the zero values of Config.
const (
	DefaultMinRx      = 300 * time.Millisecond
	DefaultMinTx      = 300 * time.Millisecond
	DefaultMultiplier = 3
)

// shutdownCopies AdminDown packets are sent by Shutdown, at the transmit
// interval but at most shutdownSpacing apart, so that one lost packet does
// not turn a shutdown into a failure at the peer, and Shutdown is over
// within a second.
const (
	shutdownCopies  = 3
	shutdownSpacing = 400 * time.Millisecond
)

// Config configures a Session.
type Config struct {
	// Local is the address packets are sent from and received on; the
	// kernel picks the source address and every local address receives
	// if it is not set.
	Local netip.Addr
	// Peer is the other end of the session.
	Peer netip.Addr
	// Multihop selects RFC 5883 (port 4784, no TTL check) instead of
	// RFC 5881 (port 3784, TTL 255 required).
	Multihop bool
	// MinRx and MinTx are the Required Min RX and Desired Min TX
	// intervals, Multiplier the Detect Mult; DefaultMinRx, DefaultMinTx
	// and DefaultMultiplier when zero.
	MinRx, MinTx time.Duration
	Multiplier   uint8
}

func (c Config) timers() intervals {
	return intervals{
		MinRx: cmp.Or(c.MinRx, DefaultMinRx),
		MinTx: cmp.Or(c.MinTx, DefaultMinTx),
		Mult:  cmp.Or(c.Multiplier, DefaultMultiplier),
	}
}

// Session is one BFD session in asynchronous mode, made by Mux.New and
// run by Run.
type Session struct {
	mux   *Mux
	cfg   Config
	log   klog.Logger
	label string
	// port is where the session listens, peerPort where it sends;
	// both PortSingleHop or PortMultihop but in tests.
	port, peerPort uint16
	rand           func() float64

	// Guarded by mux.mu.
	discr    uint32
	listener *listener

	in       chan received
	changes  chan Change
	state    atomic.Uint32
	started  atomic.Bool
	done     chan struct{}
	shutdown chan struct{}
	stopOnce sync.Once

	mu        sync.Mutex
	timers    intervals
	newTimers chan struct{}
}

// received is a packet for a session, with the TTL (hop limit) it arrived
// with, -1 if unknown.
type received struct {
	p   Packet
	ttl int
	at  time.Time
}

func newSession(m *Mux, cfg Config) (*Session, error) {
	cfg.Peer, cfg.Local = cfg.Peer.Unmap(), cfg.Local.Unmap()
	if !cfg.Peer.IsValid() || cfg.Peer.IsUnspecified() {
		return nil, fmt.Errorf("bfd: peer address %q is not an address", cfg.Peer)
	}
	if cfg.Local.IsValid() && cfg.Local.Is4() != cfg.Peer.Is4() {
		return nil, fmt.Errorf("bfd: peer %s: local address %s is of another family", cfg.Peer, cfg.Local)
	}
	port := uint16(PortSingleHop)
	if cfg.Multihop {
		port = PortMultihop
	}
	s := &Session{
		mux:       m,
		cfg:       cfg,
		log:       m.log.WithValues("peer", cfg.Peer, "local", cfg.Local, "multihop", cfg.Multihop),
		label:     cfg.Peer.String(),
		port:      port,
		peerPort:  port,
		rand:      rand.Float64,
		in:        make(chan received, 16),
		changes:   make(chan Change, 16),
		done:      make(chan struct{}),
		shutdown:  make(chan struct{}),
		timers:    cfg.timers(),
		newTimers: make(chan struct{}, 1),
	}
	s.state.Store(uint32(Down))
	return s, nil
}

// Changes reports the session's state changes; it is closed when Run
// returns. A reader that falls behind loses the oldest changes, never the
// latest. A change to Down with RemoteAdminDown set is the peer shutting
// down, not a failure.
func (s *Session) Changes() <-chan Change { return s.changes }

// State is the session's state now.
func (s *Session) State() State { return State(s.state.Load()) }

// SetTimers changes the advertised intervals; zero values take the
// defaults. While Up, the change goes through a Poll Sequence.
func (s *Session) SetTimers(minRx, minTx time.Duration, mult uint8) {
	s.mu.Lock()
	s.timers = Config{MinRx: minRx, MinTx: minTx, Multiplier: mult}.timers()
	s.mu.Unlock()
	select {
	case s.newTimers <- struct{}{}:
	default:
	}
}

func (s *Session) currentTimers() intervals {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timers
}

// Shutdown tells the peer that the session is administratively down, so it
// does not take the end of the session for a failure, and returns when Run
// has returned: after about a second at most, or when ctx ends.
func (s *Session) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.shutdown) })
	if !s.started.Load() {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down BFD session with %s: %w", s.cfg.Peer, ctx.Err())
	}
}

// Run runs the session until ctx ends (the peer then detects a failure) or
// Shutdown is called (the peer is told).
func (s *Session) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("run BFD session with %s: already run", s.cfg.Peer)
	}
	defer close(s.done)
	defer close(s.changes)
	if err := s.mux.attach(s); err != nil {
		return fmt.Errorf("start BFD session with %s: %w", s.cfg.Peer, err)
	}
	defer s.mux.detach(s)
	conn, err := sender(s.cfg.Local, s.cfg.Peer)
	if err != nil {
		return fmt.Errorf("start BFD session with %s: %w", s.cfg.Peer, err)
	}
	defer conn.Close()
	s.exportSession()
	defer s.forgetMetrics()

	dst := netip.AddrPortFrom(s.cfg.Peer, s.peerPort)
	s.log.Info("Starting BFD session", "discriminator", s.discr, "source", conn.LocalAddr())
	m := newMachine(s.discr, s.currentTimers(), s.rand, time.Now())
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if d := m.deadline(); d.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(d))
		}
		select {
		case <-ctx.Done():
			s.log.Info("Stopped BFD session", "state", m.state)
			return nil
		case <-s.shutdown:
			s.adminDown(ctx, m, conn, dst)
			s.log.Info("Shut down BFD session", "state", m.state)
			return nil
		case r := <-s.in:
			if !s.cfg.Multihop && r.ttl != 255 {
				s.mux.metrics.dropped(drop(ReasonTTL, "single hop packet with TTL %d", r.ttl), s.cfg.Peer, s.log)
				continue
			}
			out, ok := m.receive(r.p, r.at)
			if !ok {
				s.mux.metrics.dropped(drop(ReasonAdminDown, "session is AdminDown"), s.cfg.Peer, s.log)
			}
			s.apply(out, conn, dst)
		case <-s.newTimers:
			t := s.currentTimers()
			s.log.V(2).Info("Changing BFD timers", "minRx", t.MinRx, "minTx", t.MinTx, "multiplier", t.Mult)
			s.apply(m.setTimers(t, time.Now()), conn, dst)
		case now := <-timer.C:
			s.apply(m.tick(now), conn, dst)
		}
	}
}

// adminDown sends the AdminDown packets of Shutdown.
func (s *Session) adminDown(ctx context.Context, m *machine, conn *net.UDPConn, dst netip.AddrPort) {
	s.apply(m.adminDown(time.Now()), conn, dst)
	spacing := min(m.txInterval(), shutdownSpacing)
	for range shutdownCopies - 1 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(spacing):
		}
		s.apply(output{send: []Packet{m.packet(false)}}, conn, dst)
	}
}

func (s *Session) apply(out output, conn *net.UDPConn, dst netip.AddrPort) {
	for _, p := range out.send {
		if _, err := conn.WriteToUDPAddrPort(p.Marshal(), dst); err != nil {
			s.log.V(2).Info("Sending BFD packet failed", "state", p.State, "err", err)
		}
	}
	if out.change == nil {
		return
	}
	c := *out.change
	s.log.Info("BFD session state changed", "from", c.From, "to", c.State, "diag", c.Diag, "remoteAdminDown", c.RemoteAdminDown)
	s.state.Store(uint32(c.State))
	s.countChange(c)
	s.publish(c)
}

// publish never blocks the session: when the reader is behind, the oldest
// change makes room.
func (s *Session) publish(c Change) {
	for {
		select {
		case s.changes <- c:
			return
		default:
		}
		select {
		case <-s.changes:
		default:
		}
	}
}

// deliver hands a packet to the session without blocking its listener.
func (s *Session) deliver(r received) error {
	select {
	case s.in <- r:
		return nil
	default:
		return drop(ReasonQueueFull, "session with %s is behind", s.cfg.Peer)
	}
}
