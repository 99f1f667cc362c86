package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// inNamespace runs fn on a thread moved into the lab namespace ns, so that
// the sockets fn opens are that namespace's; they stay there when the
// thread goes back, and may be used from any goroutine. The thread returns
// to its own namespace and to the runtime afterwards: a locked thread that
// ends would take with it, by their parent-death signal, the lab processes
// started from it.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			// The thread stays locked and ends with this goroutine.
			err = errors.Join(err, fmt.Errorf("leave namespace %s: %w", ns, serr))
		} else {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialTCP opens a TCP connection from namespace ns (the LAN client, say) to
// addr, for a test that keeps one connection open across a change.
func DialTCP(ns string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := inNamespace(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect from %s to %s: %w", ns, addr, err)
	}
	return conn, nil
}

// ListenUDP opens a UDP socket bound to addr in namespace ns, for a test that
// takes a port a speaker needs (its heartbeats' port, say) before it starts.
func ListenUDP(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := inNamespace(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s on %s: %w", ns, addr, err)
	}
	return conn, nil
}
