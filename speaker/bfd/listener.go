package bfd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// A UDP port can be bound once per local address, so every session on the
// same (local address, port) shares one listener, and the discriminators
// that demultiplex them must be unique across the process. Both are
// process-wide resources; the registry below is their one owner.
var registry = struct {
	sync.Mutex
	listeners map[listenKey]*listener
	discrs    map[uint32]*Session
}{listeners: map[listenKey]*listener{}, discrs: map[uint32]*Session{}}

type listenKey struct {
	local netip.Addr // unspecified when the sessions set no local address
	port  uint16
}

// listener receives the control packets of the sessions bound to its key
// and hands each to its session.
type listener struct {
	key    listenKey
	conn   *net.UDPConn
	read   func(b []byte) (n int, ttl int, src netip.Addr, err error)
	log    klog.Logger
	closed chan struct{}

	// Guarded by registry.
	sessions []*Session
}

// attach registers s with a discriminator and with the listener of its
// key, opening it if s is the first.
func attach(s *Session) (*listener, error) {
	registry.Lock()
	defer registry.Unlock()
	for s.discr == 0 || registry.discrs[s.discr] != nil {
		s.discr = rand.Uint32()
	}
	key := listenKey{local: s.cfg.Local, port: s.port}
	if !key.local.IsValid() {
		key.local = unspecified(s.cfg.Peer)
	}
	l := registry.listeners[key]
	if l == nil {
		var err error
		if l, err = listen(key, s.baseLog); err != nil {
			return nil, err
		}
		registry.listeners[key] = l
	}
	registry.discrs[s.discr] = s
	s.listener = l
	l.sessions = append(l.sessions, s)
	return l, nil
}

// detach undoes attach and closes the listener after its last session.
func (l *listener) detach(s *Session) {
	registry.Lock()
	delete(registry.discrs, s.discr)
	for i, each := range l.sessions {
		if each == s {
			l.sessions = append(l.sessions[:i], l.sessions[i+1:]...)
			break
		}
	}
	last := len(l.sessions) == 0
	if last {
		delete(registry.listeners, l.key)
		l.conn.Close()
	}
	registry.Unlock()
	if last {
		// Outside the lock: serve may be waiting for it to demultiplex
		// a last packet.
		<-l.closed
	}
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func network(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// listenConfig lets a listener on a specific address and one on the
// wildcard address share a port.
var listenConfig = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}}

func listen(key listenKey, log klog.Logger) (*listener, error) {
	addr := netip.AddrPortFrom(key.local, key.port)
	pc, err := listenConfig.ListenPacket(context.Background(), network(key.local), addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen for BFD on %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	l := &listener{key: key, conn: conn, log: log.WithValues("listen", addr), closed: make(chan struct{})}
	// The TTL (hop limit) of every packet comes with it, for the single
	// hop check of RFC 5881 §5.
	if key.local.Is4() {
		p := ipv4.NewPacketConn(conn)
		err = p.SetControlMessage(ipv4.FlagTTL, true)
		l.read = func(b []byte) (int, int, netip.Addr, error) {
			n, cm, src, err := p.ReadFrom(b)
			ttl := -1
			if cm != nil {
				ttl = cm.TTL
			}
			return n, ttl, addrOf(src), err
		}
	} else {
		p := ipv6.NewPacketConn(conn)
		err = p.SetControlMessage(ipv6.FlagHopLimit, true)
		l.read = func(b []byte) (int, int, netip.Addr, error) {
			n, cm, src, err := p.ReadFrom(b)
			ttl := -1
			if cm != nil {
				ttl = cm.HopLimit
			}
			return n, ttl, addrOf(src), err
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask for the TTL of BFD packets on %s: %w", addr, err)
	}
	go l.serve()
	return l, nil
}

func addrOf(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *listener) serve() {
	defer close(l.closed)
	b := make([]byte, 1500)
	for {
		n, ttl, src, err := l.read(b)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			l.log.V(2).Info("Read BFD packet failed", "err", err)
			continue
		}
		at := time.Now()
		p, err := Parse(b[:n])
		if err != nil {
			dropped(err, src, l.log)
			continue
		}
		s, err := l.demux(p, src)
		if err != nil {
			dropped(err, src, l.log)
			continue
		}
		if err := s.deliver(received{p: p, ttl: ttl, at: at}); err != nil {
			dropped(err, src, l.log)
		}
	}
}

// demux finds the session of a packet (RFC 5880 §6.8.6): by Your
// Discriminator, or by the source address while the peer does not know it
// yet (RFC 5881 §3). A session never takes its own packets, as when both
// ends of a test share a loopback address.
func (l *listener) demux(p Packet, src netip.Addr) (*Session, error) {
	registry.Lock()
	defer registry.Unlock()
	if p.YourDiscr != 0 {
		s := registry.discrs[p.YourDiscr]
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

func dropped(err error, src netip.Addr, log klog.Logger) {
	reason := ReasonNoSession
	var de *DropError
	if errors.As(err, &de) {
		reason = de.Reason
	}
	packetsDropped.WithLabelValues(string(reason)).Inc()
	log.V(4).Info("Dropped BFD packet", "from", src, "reason", reason, "err", err)
}

// sender opens the socket a session sends from: a source port of its own
// in 49152-65535 (RFC 5881 §4), TTL (hop limit) 255 so the peer's single
// hop check holds, and the precedence of network control traffic.
func sender(local, peer netip.Addr) (*net.UDPConn, error) {
	if !local.IsValid() {
		local = unspecified(peer)
	}
	var err error
	for range 64 {
		port := uint16(49152 + rand.IntN(65536-49152))
		addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, port))
		var conn *net.UDPConn
		conn, err = net.ListenUDP(network(local), addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open BFD source port on %s: %w", local, err)
		}
		if local.Is4() {
			c := ipv4.NewConn(conn)
			err = errors.Join(c.SetTTL(255), c.SetTOS(0xc0))
		} else {
			c := ipv6.NewConn(conn)
			err = errors.Join(c.SetHopLimit(255), c.SetTrafficClass(0xc0))
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("set TTL 255 on BFD source port %s: %w", addr, err)
		}
		return conn, nil
	}
	return nil, fmt.Errorf("open BFD source port on %s: no free port in 49152-65535: %w", local, err)
}
