package bfd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

type listenKey struct {
	local netip.Addr // unspecified when the sessions set no local address
	port  uint16
}

// listener receives the control packets of the sessions bound to its key
// and hands each to its session.
type listener struct {
	mux    *Mux
	key    listenKey
	conn   *net.UDPConn
	read   func(b []byte) (n int, ttl int, src netip.Addr, err error)
	log    klog.Logger
	closed chan struct{}

	// Guarded by mux.mu.
	sessions []*Session
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

func listen(m *Mux, key listenKey) (*listener, error) {
	addr := netip.AddrPortFrom(key.local, key.port)
	pc, err := listenConfig.ListenPacket(context.Background(), network(key.local), addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen for BFD on %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	l := &listener{mux: m, key: key, conn: conn, log: m.log.WithValues("listen", addr), closed: make(chan struct{})}
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
			l.mux.metrics.dropped(err, src, l.log)
			continue
		}
		s, err := l.mux.demux(l, p, src)
		if err != nil {
			l.mux.metrics.dropped(err, src, l.log)
			continue
		}
		if err := s.deliver(received{p: p, ttl: ttl, at: at}); err != nil {
			l.mux.metrics.dropped(err, src, l.log)
		}
	}
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
