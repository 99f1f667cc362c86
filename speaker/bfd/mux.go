package bfd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// ErrMuxClosed is the error of New and Run on a Mux that was closed.
var ErrMuxClosed = errors.New("bfd: mux closed")

// Mux owns what sessions share. A UDP port can be bound once per local
// address, so every session on the same (local address, port) shares one
// listener, and the discriminators that demultiplex packets to them must
// be unique; the Mux opens and closes the listeners, allocates the
// discriminators and holds the sessions' metrics. A process needs one Mux:
// two would bind the same ports.
type Mux struct {
	log     klog.Logger
	metrics *metrics

	mu        sync.Mutex
	listeners map[listenKey]*listener
	discrs    map[uint32]*Session
	closed    bool
}

// NewMux returns a Mux with no listener; listeners open with the first
// session that runs on their address and port and close after the last.
func NewMux(logger klog.Logger) *Mux {
	return &Mux{
		log:       logger,
		metrics:   newMetrics(),
		listeners: map[listenKey]*listener{},
		discrs:    map[uint32]*Session{},
	}
}

// RegisterMetrics registers the metrics of m's sessions with reg.
func (m *Mux) RegisterMetrics(reg prometheus.Registerer) error {
	return m.metrics.register(reg)
}

// New returns a session with cfg's peer; Run runs it.
func (m *Mux) New(cfg Config) (*Session, error) {
	s, err := newSession(m, cfg)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("new BFD session with %s: %w", cfg.Peer, ErrMuxClosed)
	}
	return s, nil
}

// Close closes the listeners still open and makes New and Run fail. A
// session still running when m closes hears its peer no more and goes Down
// when its detection time expires: Shutdown the sessions first.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	open := make([]*listener, 0, len(m.listeners))
	for key, l := range m.listeners {
		delete(m.listeners, key)
		l.conn.Close()
		open = append(open, l)
	}
	m.mu.Unlock()
	for _, l := range open {
		<-l.closed
	}
	return nil
}

// attach gives s a discriminator and the listener of its key, opening it
// if s is the first.
func (m *Mux) attach(s *Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrMuxClosed
	}
	for s.discr == 0 || m.discrs[s.discr] != nil {
		s.discr = rand.Uint32()
	}
	key := listenKey{local: s.cfg.Local, port: s.port}
	if !key.local.IsValid() {
		key.local = unspecified(s.cfg.Peer)
	}
	l := m.listeners[key]
	if l == nil {
		var err error
		if l, err = listen(m, key); err != nil {
			return err
		}
		m.listeners[key] = l
	}
	m.discrs[s.discr] = s
	s.listener = l
	l.sessions = append(l.sessions, s)
	return nil
}

// detach undoes attach and closes the listener after its last session.
func (m *Mux) detach(s *Session) {
	m.mu.Lock()
	delete(m.discrs, s.discr)
	l := s.listener
	for i, each := range l.sessions {
		if each == s {
			l.sessions = append(l.sessions[:i], l.sessions[i+1:]...)
			break
		}
	}
	// Close may have closed the listener already.
	last := len(l.sessions) == 0 && m.listeners[l.key] == l
	if last {
		delete(m.listeners, l.key)
		l.conn.Close()
	}
	m.mu.Unlock()
	if last {
		// Outside the lock: serve may be waiting for it to demultiplex
		// a last packet.
		<-l.closed
	}
}

// demux finds the session of a packet that came to l (RFC 5880 §6.8.6): by
// Your Discriminator, or by the source address while the peer does not
// know it yet (RFC 5881 §3). A session never takes its own packets, as
// when both ends of a test share a loopback address.
func (m *Mux) demux(l *listener, p Packet, src netip.Addr) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.YourDiscr != 0 {
		s := m.discrs[p.YourDiscr]
		if s == nil || s.listener != l {
			return nil, drop(ReasonNoSession, "no session with discriminator %d", p.YourDiscr)
		}
		if !samePeer(s.cfg.Peer, src) {
			return nil, drop(ReasonWrongPeer, "discriminator %d belongs to peer %s", p.YourDiscr, s.cfg.Peer)
		}
		return s, nil
	}
	for _, s := range l.sessions {
		if samePeer(s.cfg.Peer, src) && s.discr != p.MyDiscr {
			return s, nil
		}
	}
	return nil, drop(ReasonNoSession, "no session with peer %s", src)
}

func samePeer(peer, src netip.Addr) bool {
	return peer.WithZone("") == src.WithZone("")
}
