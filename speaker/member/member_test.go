package member

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"
)

// Three members on loopback find each other and carry each other's info.
func TestAllAlive(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, Config{}, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		c.waitAlive(n, "a", "b", "c")
	}
	for name, p := range c.view("a").Alive {
		if !p.Direct || p.Info["if/eth0"] != "up" {
			t.Errorf("a's view of %s = %+v, want direct with if/eth0=up", name, p)
		}
	}
}

// A member that crashes (no leaving heartbeat) is dead to the others after
// Timeout, noticed by the timer since no datagram announces it.
func TestCrashDetected(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, Config{}, "a", "b", "c")
	c.waitAlive("a", "a", "b", "c")
	c.waitAlive("b", "a", "b", "c")
	c.nodes["c"].crash(t)
	c.waitAlive("a", "a", "b")
	c.waitAlive("b", "a", "b")
}

// A member that leaves is dead at once, and a restart is a new incarnation
// that is alive again. Timeout is far beyond the wait bound, so only the
// leaving heartbeat can explain the departure being seen in time; it also
// gives the old incarnation's relays time to resurrect it if they could.
func TestLeaveAndRestart(t *testing.T) {
	t.Parallel()
	cfg := Config{Timeout: 30 * eventually, Forget: 60 * eventually}
	c := newCluster(t, 3, cfg, "a", "b", "c")
	c.waitAlive("a", "a", "b", "c")
	c.waitAlive("b", "a", "b", "c")
	old := c.nodes["c"].m.incarnation

	c.nodes["c"].leave(t)
	c.waitAlive("a", "a", "b")
	c.waitAlive("b", "a", "b")

	if c.start("c").m.incarnation == old {
		t.Fatalf("restarted c kept incarnation %d", old)
	}
	for _, n := range []string{"a", "b", "c"} {
		c.waitAlive(n, "a", "b", "c")
	}
}

// With a and b unable to reach each other but both reaching c, a and b stay
// alive to each other through c's relays, marked indirect; healing the link
// makes them direct again.
func TestPartialPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4, Config{}, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		c.waitAlive(n, "a", "b", "c")
	}
	c.nodes["a"].m.setDrop(func(from, to string) bool {
		return (from == "a" && to == "b") || (from == "b" && to == "a")
	})
	indirect := func(observer, peer string) func() (bool, string) {
		return func() (bool, string) {
			v := c.view(observer)
			p, ok := v.Alive[peer]
			return !v.Isolated && len(v.Alive) == 3 && ok && !p.Direct && p.Info["node"] == peer, describe(v)
		}
	}
	waitFor(t, "a sees b alive through c", indirect("a", "b"))
	waitFor(t, "b sees a alive through c", indirect("b", "a"))
	c.waitAlive("c", "a", "b", "c")
	for name, p := range c.view("c").Alive {
		if !p.Direct {
			t.Errorf("c hears %s only indirectly", name)
		}
	}

	c.nodes["a"].m.setDrop(nil)
	waitFor(t, "a hears b directly again", func() (bool, string) {
		v := c.view("a")
		return v.Alive["b"].Direct, describe(v)
	})
}

// A member whose traffic is all lost reports itself isolated and alone, the
// others see it dead, and when traffic resumes all three are alive again.
func TestIsolation(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 5, Config{}, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		c.waitAlive(n, "a", "b", "c")
	}
	a := c.nodes["a"].m
	drain(a.Changes())
	a.setDrop(func(from, to string) bool { return from == "a" || to == "a" })

	waitFor(t, "a isolated and alone", func() (bool, string) {
		v := a.View()
		_, self := v.Alive["a"]
		return v.Isolated && len(v.Alive) == 1 && self, describe(v)
	})
	select {
	case <-a.Changes():
	default:
		t.Error("Changes not signalled when a became isolated")
	}
	c.waitAlive("b", "b", "c")
	c.waitAlive("c", "b", "c")

	a.setDrop(nil)
	for _, n := range []string{"a", "b", "c"} {
		c.waitAlive(n, "a", "b", "c")
	}
}

// Heartbeats from a node not in SetPeers, or from a listed node but another
// address, are counted as rejected and make nobody alive. Not parallel: it
// reads the shared rejection counters.
func TestRejectsUnknownAndMisaddressed(t *testing.T) {
	const subnet = 6
	addrA := freeAddr(t, loopback(subnet, 11))
	addrB := freeAddr(t, loopback(subnet, 12))
	addrD := freeAddr(t, loopback(subnet, 14))
	elsewhere := netip.AddrPortFrom(loopback(subnet, 99), addrB.Port())

	unknown := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reasonUnknownPeer))
	wrong := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reasonWrongAddress))

	a := run(t, Config{}, "a", addrA, map[string]netip.AddrPort{"b": elsewhere})
	run(t, Config{}, "b", addrB, map[string]netip.AddrPort{"a": addrA})
	run(t, Config{}, "d", addrD, map[string]netip.AddrPort{"a": addrA})

	waitFor(t, "a rejects b (wrong address) and d (unknown)", func() (bool, string) {
		du := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reasonUnknownPeer)) - unknown
		dw := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reasonWrongAddress)) - wrong
		return du >= 3 && dw >= 3, fmt.Sprintf("unknown_peer +%v, wrong_address +%v", du, dw)
	})
	v := a.m.View()
	if len(v.Alive) != 1 || v.Isolated {
		t.Errorf("a's view = %s, want only a, not isolated", describe(v))
	}
}

// SetInfo on one member reaches the others' views and signals their Changes.
func TestInfoPropagates(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 7, Config{}, "a", "b", "c")
	c.waitAlive("b", "a", "b", "c")
	b := c.nodes["b"].m
	drain(b.Changes())

	want := map[string]string{"node": "a", "if/eth0": "down"}
	c.nodes["a"].m.SetInfo(want)
	signalled := false
	waitFor(t, "b sees a's new info after a Changes signal", func() (bool, string) {
		select {
		case <-b.Changes():
			signalled = true
		default:
		}
		v := b.View()
		return signalled && maps.Equal(v.Alive["a"].Info, want), describe(v)
	})
	if got := c.view("a").Alive["a"].Info; !maps.Equal(got, want) {
		t.Errorf("a's own info = %v, want %v", got, want)
	}
}

// New fails clearly when the address is taken, rejects bad settings before
// binding, and listens on DefaultPort when Bind has no port.
func TestNew(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t, loopback(8, 11))
	run(t, Config{}, "a", addr, nil)
	if _, err := New(Config{Node: "b", Bind: addr}); err == nil {
		t.Errorf("New on %s in use: no error", addr)
	} else {
		t.Logf("address in use: %v", err)
	}

	free := freeAddr(t, loopback(8, 12))
	for _, cfg := range []Config{
		{Bind: free},
		{Node: "x"},
		{Node: "x", Bind: free, Interval: 500 * time.Millisecond, Timeout: 400 * time.Millisecond},
		{Node: "x", Bind: free, Forget: 100 * time.Millisecond},
	} {
		if m, err := New(cfg); err == nil {
			m.conn.Close()
			t.Errorf("New(%+v): no error", cfg)
		}
	}

	m, err := New(Config{Node: "x", Bind: netip.AddrPortFrom(loopback(8, 13), 0), Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Skipf("default port unavailable here: %v", err)
	}
	defer m.conn.Close()
	if port := m.conn.LocalAddr().(*net.UDPAddr).Port; port != DefaultPort {
		t.Errorf("bound port %d, want DefaultPort %d", port, DefaultPort)
	}
}
