package bgp

// BFD against FRR's bfdd, in the lab of frr_test.go: the v4 and v6 sessions
// run BFD beside BGP, and both sides hold a BGP session for 90 s, so that
// a route FRR drops within a few seconds can only have been dropped because
// BFD went down.

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/internal/netnstest"
)

const (
	// frrBFDProfile is bfdd's profile of the neighbors with BFD.
	frrBFDProfile = "ilbb-nodes"
	// The BGP timers of the sessions with BFD, on both sides.
	bfdTestHold      = 90 * time.Second
	bfdTestKeepalive = 30 * time.Second
	// bfdTestDeadline bounds how long FRR may take to drop a silent node:
	// a third of the hold time, and still many detection times.
	bfdTestDeadline = bfdTestHold / 3
)

// bfdTestPeers are the v4 and v6 sessions of testPeers with the long hold
// time and BFD settings b (Local: the session's source address).
func bfdTestPeers(b BFD) []Peer {
	all := testPeers()
	var peers []Peer
	for _, name := range []string{"v4", "v6"} {
		p := all[name]
		p.HoldTime, p.KeepaliveTime = bfdTestHold, bfdTestKeepalive
		p.BFD = b
		p.BFD.Local = p.SourceAddress
		peers = append(peers, p)
	}
	return peers
}

// TestBFDAgainstFRR runs the Manager's BFD sessions against FRR's bfdd
// (profile 300 ms × 3) over IPv4 and IPv6:
//   - both ends come Up, in FRR's BFD table, in bgpd's view of its
//     neighbors and in the Manager's status, and FRR replacing its first
//     BFD session once BGP is up resets nothing on the node's side;
//   - FRR learns the intervals and multiplier the node advertises, and
//     new ones go through a Poll Sequence without a flap of BFD or BGP;
//   - a node that goes silent (every packet it sends is dropped, as when it
//     dies) is dropped by FRR because BFD's detection time expired, with
//     its routes gone long before the 90 s hold time;
//   - a graceful Shutdown says AdminDown before its Cease: FRR's session
//     goes down because the neighbor said so, not by detection time.
func TestBFDAgainstFRR(t *testing.T) {
	lab := setupLab(t)
	lab.startFRR(t, true)
	h := startHelper(t, lab)

	// Timers of our own, unlike FRR's, so that FRR's table shows it
	// learned them from the node's packets.
	ours := BFD{Enabled: true, MinRx: 200 * time.Millisecond, MinTx: 250 * time.Millisecond, Multiplier: 4}
	routes := []Route{
		{Prefix: vip1, NextHop: nodeV4, Peers: []string{"v4"}},
		{Prefix: vip6, NextHop: nodeV6, Peers: []string{"v6"}},
	}
	h.apply(t, bfdTestPeers(ours), routes, "")
	sessions := map[string]netip.Addr{"v4": nodeV4, "v6": nodeV6} // peer name: the node's address, FRR's key

	// up waits for both sessions to be Established with BFD Up at both
	// ends, and the routes in FRR's RIB.
	up := func(t *testing.T, timeout time.Duration) {
		t.Helper()
		for name, addr := range sessions {
			h.waitStatus(t, timeout, name+" Established with BFD Up", func(s map[string]PeerStatus) (bool, string) {
				st := s[name]
				return st.State == StateEstablished && st.BFD != nil && st.BFD.State == "Up", fmt.Sprintf("%+v %+v", st, st.BFD)
			})
			netnstest.WaitFor(t, 10*time.Second, "FRR's BFD session with "+addr.String()+" up", func() (bool, string) {
				p, ok := lab.bfdPeer(t, addr)
				return ok && p.Status == "up", fmt.Sprintf("%+v", p)
			})
		}
		lab.waitRIB(t, vip1, true, nodeV4)
		lab.waitRIB(t, vip6, true, nodeV6)
	}

	t.Run("BFD comes up on both sides", func(t *testing.T) {
		up(t, 30*time.Second)
		// FRR 8.4 makes the BFD session of a configured neighbor before
		// BGP is up; once it is, bgpd registers the session again with
		// its local address and interface, and bfdd ends the first one
		// (it says Down, "neighbor signaled session down") for a new one.
		// bgpd takes that for BFD going down and resets the session once
		// (Cease/BFD Down); the node must not add a reset of its own, for
		// FRR's packets kept coming.
		for _, addr := range sessions {
			netnstest.WaitFor(t, 20*time.Second, "FRR's BGP session with "+addr.String()+" up for 2s", func() (bool, string) {
				n := lab.neighbor(t, addr)
				return n.BGPState == "Established" && n.UpMsec >= 2000, fmt.Sprintf("%s for %d ms", n.BGPState, n.UpMsec)
			})
		}
		up(t, 30*time.Second)
		if lab.frrLogged(`(Cease/Administrative Reset) "BFD down`) {
			t.Error("the node reset a BGP session because BFD went down, on a path that works")
		}
		for _, addr := range sessions {
			n := lab.neighbor(t, addr)
			t.Logf("FRR's BGP session with %s: established %d times, last reset %q, notification %q", addr, n.ConnectionsEstablished, n.LastResetDueTo, n.LastNotificationReason)
			if n.BFD.Status != "Up" {
				t.Errorf("bgpd's BFD status of %s: %q, want Up", addr, n.BFD.Status)
			}
			if n.HoldTimeMsecs != int(bfdTestHold/time.Millisecond) {
				t.Errorf("FRR's session with %s holds for %d ms, want %d", addr, n.HoldTimeMsecs, bfdTestHold/time.Millisecond)
			}
		}
	})

	t.Run("FRR learns the node's timers", func(t *testing.T) {
		for _, addr := range sessions {
			p, _ := lab.bfdPeer(t, addr)
			t.Logf("FRR's BFD session with %s: %+v", addr, p)
			if p.RemoteReceive != 200 || p.RemoteTransmit != 250 || p.RemoteMultiplier != 4 {
				t.Errorf("FRR's BFD session with %s: remote receive %d ms, transmit %d ms, multiplier %d; want 200, 250, 4",
					addr, p.RemoteReceive, p.RemoteTransmit, p.RemoteMultiplier)
			}
			if p.Receive != 300 || p.Transmit != 300 || p.Multiplier != 3 {
				t.Errorf("FRR's BFD session with %s: receive %d ms, transmit %d ms, multiplier %d; want its profile's 300, 300, 3",
					addr, p.Receive, p.Transmit, p.Multiplier)
			}
		}
	})

	t.Run("new timers by a Poll Sequence", func(t *testing.T) {
		downs, conns := map[netip.Addr]int{}, map[netip.Addr]int{}
		for _, addr := range sessions {
			downs[addr] = lab.bfdCounters(t, addr).SessionDownEvents
			conns[addr] = lab.neighbor(t, addr).ConnectionsEstablished
		}
		slower := ours
		slower.MinRx, slower.MinTx, slower.Multiplier = 300*time.Millisecond, 300*time.Millisecond, 3
		h.apply(t, bfdTestPeers(slower), routes, "")
		for _, addr := range sessions {
			netnstest.WaitFor(t, 10*time.Second, "FRR learning the new timers of "+addr.String(), func() (bool, string) {
				p, _ := lab.bfdPeer(t, addr)
				return p.RemoteReceive == 300 && p.RemoteTransmit == 300 && p.RemoteMultiplier == 3, fmt.Sprintf("%+v", p)
			})
		}
		time.Sleep(time.Second) // a flap would show by now
		for _, addr := range sessions {
			if p, _ := lab.bfdPeer(t, addr); p.Status != "up" {
				t.Errorf("FRR's BFD session with %s is %s after new timers", addr, p.Status)
			}
			if c := lab.bfdCounters(t, addr); c.SessionDownEvents != downs[addr] {
				t.Errorf("FRR's BFD session with %s went down %d times for new timers", addr, c.SessionDownEvents-downs[addr])
			}
			if n := lab.neighbor(t, addr); n.ConnectionsEstablished != conns[addr] || n.BGPState != "Established" {
				t.Errorf("FRR's BGP session with %s: %s, established %d times (was %d)", addr, n.BGPState, n.ConnectionsEstablished, conns[addr])
			}
		}
	})

	t.Run("a silent node is dropped by BFD", func(t *testing.T) {
		// A killed speaker would not do: the kernel closes its TCP
		// connections, and FRR drops the session at once without BFD.
		// A dead node says nothing more, which dropping all it sends
		// to the router plays.
		up(t, 60*time.Second)
		silence := lab.silenceNode(t)
		start := time.Now()
		var bfdDown, v4Gone, v6Gone time.Duration
		deadline := start.Add(bfdTestDeadline)
		for time.Now().Before(deadline) && (bfdDown == 0 || v4Gone == 0 || v6Gone == 0) {
			if p, _ := lab.bfdPeer(t, nodeV4); bfdDown == 0 && p.Status == "down" {
				bfdDown = time.Since(start)
			}
			if _, ok := lab.ribRoute(t, vip1); v4Gone == 0 && !ok {
				v4Gone = time.Since(start)
			}
			if _, ok := lab.ribRoute(t, vip6); v6Gone == 0 && !ok {
				v6Gone = time.Since(start)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("after the node went silent: FRR's BFD session with %s down after %v; %s gone from FRR's RIB after %v, %s after %v",
			nodeV4, bfdDown, vip1, v4Gone, vip6, v6Gone)
		if bfdDown == 0 || v4Gone == 0 || v6Gone == 0 {
			t.Fatalf("FRR kept the silent node for %v (hold time %v): BFD down after %v, %s gone after %v, %s after %v (0: not yet)",
				bfdTestDeadline, bfdTestHold, bfdDown, vip1, v4Gone, vip6, v6Gone)
		}
		for _, addr := range sessions {
			p, _ := lab.bfdPeer(t, addr)
			if p.Status != "down" || p.Diagnostic != "control detection time expired" {
				t.Errorf("FRR's BFD session with %s: %s, diagnostic %q; want down by detection time", addr, p.Status, p.Diagnostic)
			}
			n := lab.neighbor(t, addr)
			why := n.LastResetDueTo + "; " + n.LastNotificationReason
			t.Logf("FRR's BGP session with %s: %s, last reset %q", addr, n.BGPState, why)
			if n.BGPState == "Established" || !strings.Contains(why, "BFD") {
				t.Errorf("FRR's BGP session with %s: %s, last reset %q; want reset because BFD went down", addr, n.BGPState, why)
			}
		}

		// GoBGP waits 30 s (its idle hold time after a reset) before it
		// connects again after the node's BFD reset BGP.
		silence()
		up(t, 60*time.Second)
	})

	t.Run("a graceful shutdown says AdminDown", func(t *testing.T) {
		h.shutdown(t)
		lab.waitRIB(t, vip1, false, netip.Addr{})
		lab.waitRIB(t, vip6, false, netip.Addr{})
		for _, addr := range sessions {
			var p frrBFDPeer
			netnstest.WaitFor(t, 10*time.Second, "FRR's BFD session with "+addr.String()+" down", func() (bool, string) {
				p, _ = lab.bfdPeer(t, addr)
				return p.Status != "up", fmt.Sprintf("%+v", p)
			})
			n := lab.neighbor(t, addr)
			t.Logf("after the shutdown: FRR's BFD session with %s: %s, diagnostic %q, remote diagnostic %q; BGP: %s, last reset %q, notification %q",
				addr, p.Status, p.Diagnostic, p.RemoteDiagnostic, n.BGPState, n.LastResetDueTo, n.LastNotificationReason)
			if p.Diagnostic != "neighbor signaled session down" || p.RemoteDiagnostic != "administratively down" {
				t.Errorf("FRR's BFD session with %s: diagnostic %q, remote diagnostic %q; want the neighbor's administrative down",
					addr, p.Diagnostic, p.RemoteDiagnostic)
			}
		}
	})
}

// silenceNode drops everything the node namespace sends to the router
// (nftables in the node namespace only) and returns the function that lets
// it through again; the namespace's removal drops the rule too.
func (l *lab) silenceNode(t *testing.T) (restore func()) {
	t.Helper()
	table := "ilbb-silence"
	rules := filepath.Join(t.TempDir(), "silence.nft")
	netnstest.WriteFileAtomic(t, rules, fmt.Appendf(nil, "table inet %s {\n chain out {\n  type filter hook output priority 0;\n  oifname %q drop\n }\n}\n", table, l.nodeLink))
	if out, err := netnstest.Run("ip", "netns", "exec", l.node, "nft", "-f", rules); err != nil {
		t.Fatalf("nft in %s: %v\n%s", l.node, err, out)
	}
	return func() {
		t.Helper()
		if out, err := netnstest.Run("ip", "netns", "exec", l.node, "nft", "delete", "table", "inet", table); err != nil {
			t.Fatalf("nft in %s: %v\n%s", l.node, err, out)
		}
	}
}

// frrBFDPeer is the part of `show bfd peers json` the test reads; times
// are in milliseconds.
type frrBFDPeer struct {
	Peer             string `json:"peer"`
	Status           string `json:"status"`
	Diagnostic       string `json:"diagnostic"`
	RemoteDiagnostic string `json:"remote-diagnostic"`
	Receive          int    `json:"receive-interval"`
	Transmit         int    `json:"transmit-interval"`
	Multiplier       int    `json:"detect-multiplier"`
	RemoteReceive    int    `json:"remote-receive-interval"`
	RemoteTransmit   int    `json:"remote-transmit-interval"`
	RemoteMultiplier int    `json:"remote-detect-multiplier"`
}

// bfdPeer is FRR's BFD session with the node's address addr.
func (l *lab) bfdPeer(t *testing.T, addr netip.Addr) (frrBFDPeer, bool) {
	t.Helper()
	var peers []frrBFDPeer
	l.vtyshJSON(t, "show bfd peers json", &peers)
	for _, p := range peers {
		if p.Peer == addr.String() {
			return p, true
		}
	}
	return frrBFDPeer{}, false
}

// frrBFDCounters is the part of `show bfd peers counters json` the test
// reads.
type frrBFDCounters struct {
	Peer              string `json:"peer"`
	SessionDownEvents int    `json:"session-down-events"`
}

func (l *lab) bfdCounters(t *testing.T, addr netip.Addr) frrBFDCounters {
	t.Helper()
	var peers []frrBFDCounters
	l.vtyshJSON(t, "show bfd peers counters json", &peers)
	for _, p := range peers {
		if p.Peer == addr.String() {
			return p
		}
	}
	t.Fatalf("FRR has no BFD session with %s", addr)
	return frrBFDCounters{}
}
