package member

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"
)

// These tests feed datagrams to handle with explicit times, without Run, so
// they check the membership rules deterministically.

var (
	addrB = netip.MustParseAddrPort("127.0.9.12:7000")
	addrC = netip.MustParseAddrPort("127.0.9.13:7000")
)

// newUnit returns member "a" (not running) with peers b and c.
func newUnit(t *testing.T) *Members {
	t.Helper()
	m, err := New(Config{
		Node: "a", Bind: freeAddr(t, loopback(9, 11)),
		Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4))),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.conn.Close() })
	m.SetPeers(map[string]netip.AddrPort{"b": addrB, "c": addrC})
	return m
}

func heartbeat(node string, inc, seq uint64, heard ...relayEntry) []byte {
	data, _ := (&message{Node: node, Incarnation: inc, Seq: seq, Info: map[string]string{"node": node}, Heard: heard}).encode()
	return data
}

func leaving(node string, inc, seq uint64) []byte {
	data, _ := (&message{Node: node, Incarnation: inc, Seq: seq, Leaving: true}).encode()
	return data
}

func relay(node string, inc uint64, age time.Duration) relayEntry {
	return relayEntry{Node: node, Incarnation: inc, Age: age, Info: map[string]string{"node": node}}
}

func viewAt(m *Members, now time.Time) View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.computeView(now)
}

// checkAlive fails unless v is not isolated and has exactly want alive;
// want maps a node to whether it must be Direct.
func checkAlive(t *testing.T, step string, v View, want map[string]bool) {
	t.Helper()
	ok := !v.Isolated && len(v.Alive) == len(want)
	for name, direct := range want {
		p, found := v.Alive[name]
		ok = ok && found && p.Direct == direct
	}
	if !ok {
		t.Errorf("%s: view %s, want alive %v (name: direct)", step, describe(v), want)
	}
}

// A peer is alive through a relay only while the relaying peer is heard
// directly, and only as long as the relayer's own report was fresh.
func TestRelayRules(t *testing.T) {
	t.Parallel()
	m := newUnit(t)
	t0 := time.Now()
	m.handle(addrB, heartbeat("b", 1, 1, relay("c", 7, 300*time.Millisecond), relay("a", 9, 0), relay("x", 3, 0)), t0)

	// b is direct; c is relayed; the relay about ourselves and about x
	// (not in SetPeers) is ignored.
	checkAlive(t, "relayed", viewAt(m, t0.Add(10*time.Millisecond)), map[string]bool{"a": true, "b": true, "c": false})
	if info := viewAt(m, t0).Alive["c"].Info["node"]; info != "c" {
		t.Errorf("relayed info of c = %q, want c", info)
	}
	// b heard c 300 ms before sending: the report expires 50 ms after receipt.
	checkAlive(t, "relay expired", viewAt(m, t0.Add(60*time.Millisecond)), map[string]bool{"a": true, "b": true})

	m.handle(addrB, heartbeat("b", 1, 2, relay("c", 7, 0)), t0.Add(100*time.Millisecond))
	checkAlive(t, "fresh relay", viewAt(m, t0.Add(200*time.Millisecond)), map[string]bool{"a": true, "b": true, "c": false})
	// b goes silent: its relays die with it, and a is alone (one peer
	// heard recently is not enough to call itself cut off).
	checkAlive(t, "relayer silent", viewAt(m, t0.Add(100*time.Millisecond+m.timeout)), map[string]bool{"a": true})
}

// A leaving incarnation is dead at once and stays dead whatever relays or
// delayed heartbeats say; a new incarnation is alive on its first heartbeat.
func TestLeavingIsFinal(t *testing.T) {
	t.Parallel()
	m := newUnit(t)
	t0 := time.Now()
	m.handle(addrB, heartbeat("b", 1, 1), t0)
	m.handle(addrC, heartbeat("c", 7, 1), t0)
	checkAlive(t, "both heard", viewAt(m, t0), map[string]bool{"a": true, "b": true, "c": true})

	m.handle(addrC, leaving("c", 7, 2), t0)
	checkAlive(t, "c left", viewAt(m, t0), map[string]bool{"a": true, "b": true})

	m.handle(addrB, heartbeat("b", 1, 2, relay("c", 7, 0)), t0)
	m.handle(addrC, heartbeat("c", 7, 1), t0) // delayed behind the leave
	m.handle(addrC, leaving("c", 7, 2), t0)   // a further copy
	checkAlive(t, "stale relay and heartbeat", viewAt(m, t0), map[string]bool{"a": true, "b": true})

	m.handle(addrC, heartbeat("c", 8, 1), t0)
	checkAlive(t, "c restarted", viewAt(m, t0), map[string]bool{"a": true, "b": true, "c": true})
}

// A crashed and restarted peer (no leave) is alive as its new incarnation,
// and an older heartbeat of the same incarnation does not roll its info back.
func TestRestartAndReorder(t *testing.T) {
	t.Parallel()
	m := newUnit(t)
	t0 := time.Now()
	m.handle(addrB, heartbeat("b", 1, 5), t0)
	old, _ := (&message{Node: "b", Incarnation: 1, Seq: 4, Info: map[string]string{"node": "old"}}).encode()
	m.handle(addrB, old, t0)
	if got := viewAt(m, t0).Alive["b"].Info["node"]; got != "b" {
		t.Errorf("after a reordered heartbeat, b's info node=%q, want b", got)
	}
	m.handle(addrB, heartbeat("b", 2, 1), t0.Add(time.Second))
	if st := m.states["b"]; st.incarnation != 2 || st.seq != 1 {
		t.Errorf("after restart, state of b = incarnation %d seq %d, want 2 and 1", st.incarnation, st.seq)
	}
}

// Isolation needs at least two peers heard within Forget and none within
// Timeout. A lone node, the survivor of a two-node cluster, one whose peers
// are long gone, or one whose peers left, is not isolated.
func TestIsolationRules(t *testing.T) {
	t.Parallel()
	m := newUnit(t)
	t0 := time.Now()
	checkAlive(t, "never heard a peer", viewAt(m, t0), map[string]bool{"a": true})

	m.handle(addrB, heartbeat("b", 1, 1), t0)
	checkAlive(t, "only peer silent (two-node cluster)", viewAt(m, t0.Add(m.timeout)), map[string]bool{"a": true})

	m.handle(addrC, heartbeat("c", 1, 1), t0)
	if v := viewAt(m, t0.Add(m.timeout)); !v.Isolated || !slices.Equal(aliveNames(v), []string{"a"}) {
		t.Errorf("both peers silent for Timeout: view %s, want isolated with only a", describe(v))
	}
	checkAlive(t, "peers silent for Forget", viewAt(m, t0.Add(m.forget)), map[string]bool{"a": true})

	m.handle(addrB, leaving("b", 1, 2), t0)
	checkAlive(t, "a peer left, the other silent", viewAt(m, t0.Add(m.timeout)), map[string]bool{"a": true})
	m = newUnit(t)

	m.handle(addrC, heartbeat("c", 1, 1), t0)
	m.SetPeers(map[string]netip.AddrPort{"b": addrB})
	checkAlive(t, "peer removed from SetPeers", viewAt(m, t0.Add(m.timeout)), map[string]bool{"a": true})
}

// Datagrams that are not heartbeats, carry our own name, come from an
// unknown node or from a known node's wrong address are rejected and
// counted. Not parallel: it reads the shared counters.
func TestRejections(t *testing.T) {
	m := newUnit(t)
	t0 := time.Now()
	for _, tc := range []struct {
		reason string
		from   netip.AddrPort
		data   []byte
	}{
		{reasonMalformed, addrB, []byte("hello")},
		{reasonSelf, addrB, heartbeat("a", 1, 1)},
		{reasonUnknownPeer, addrB, heartbeat("x", 1, 1)},
		{reasonWrongAddress, addrC, heartbeat("b", 1, 1)},
		{reasonWrongAddress, netip.AddrPortFrom(addrB.Addr(), addrB.Port()+1), heartbeat("b", 1, 1)},
	} {
		before := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(tc.reason))
		m.handle(tc.from, tc.data, t0)
		if got := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(tc.reason)) - before; got != 1 {
			t.Errorf("%s from %s: rejected_total{reason=%s} grew by %v, want 1", tc.data, tc.from, tc.reason, got)
		}
	}
	checkAlive(t, "after rejected datagrams", viewAt(m, t0), map[string]bool{"a": true})
}

// A peer hears us when its latest heartbeat lists our current incarnation;
// an older incarnation of ours does not count.
func TestHearsUs(t *testing.T) {
	t.Parallel()
	m := newUnit(t)
	t0 := time.Now()
	m.handle(addrB, heartbeat("b", 1, 1), t0)
	if viewAt(m, t0).Alive["b"].HearsUs {
		t.Error("b hears us before listing us")
	}
	m.handle(addrB, heartbeat("b", 1, 2, relay("a", m.incarnation+1, 0)), t0)
	if viewAt(m, t0).Alive["b"].HearsUs {
		t.Error("b hears us although it lists another incarnation of ours")
	}
	m.handle(addrB, heartbeat("b", 1, 3, relay("a", m.incarnation, 0)), t0)
	if !viewAt(m, t0).Alive["b"].HearsUs {
		t.Error("b lists us but HearsUs is false")
	}
}
