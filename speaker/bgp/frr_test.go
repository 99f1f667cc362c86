package bgp

// The real-router test: FRR (zebra and bgpd, and bfdd for TestBFDAgainstFRR
// in frr_bfd_test.go) in a router network namespace, joined by a veth pair
// to a node namespace where the Manager runs. The Manager runs in a copy of
// this test binary started with `ip netns exec` (TestHelperManager): a
// socket belongs to the namespace of the thread that opens it, and GoBGP
// opens its sockets from goroutines on any thread, so the whole process has
// to live in the node namespace. The helper reads the desired peers and
// routes from a JSON file the test rewrites, and writes the Manager's Status
// to another.
//
// One FRR serves every session. GoBGP keys sessions by router address, and
// FRR keys them by the node's address, so each session of the node goes
// from its own node address to its own router address:
//
//	peer     node (source)        router                FRR says
//	v4       172.31.249.2         172.31.249.1          AS 64513 (eBGP)
//	v6       fd31:0:0:f90::2      fd31:0:0:f90::1       AS 64513 (eBGP)
//	ibgp     172.31.249.3         172.31.249.11         AS 64512 (iBGP)
//	md5      172.31.249.4         172.31.249.12         AS 64513, password
//	badas    172.31.249.5         172.31.249.13         AS 64599: node is 64513
//	refused  172.31.249.6         172.31.249.14:1179    nothing listens there
//	wrongas  172.31.249.7         172.31.249.15         AS 64513; node expects 64599

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2/textlogger"

	"github.com/ironlb/ironlb/internal/netnstest"
	"github.com/ironlb/ironlb/speaker/bfd"
)

const (
	routerASN = 64512
	nodeASN   = 64513
	md5Secret = "ilbb-s3cret"
	// helperDirEnv is the directory with the helper's files; set only in
	// the helper.
	helperDirEnv = "ILBB_BGP_HELPER_DIR"
)

var (
	routerV4 = netip.MustParseAddr("172.31.249.1")
	routerV6 = netip.MustParseAddr("fd31:0:0:f90::1")
	nodeV4   = netip.MustParseAddr("172.31.249.2")
	nodeV6   = netip.MustParseAddr("fd31:0:0:f90::2")

	// Service addresses the node announces.
	vip1  = netip.MustParsePrefix("172.31.249.101/32")
	vip2  = netip.MustParsePrefix("172.31.249.102/32")
	vip3  = netip.MustParsePrefix("172.31.249.103/32")
	vip6  = netip.MustParsePrefix("fd31:0:0:f90::106/128")
	vip6b = netip.MustParsePrefix("fd31:0:0:f90::107/128")
)

// testPeers are the node's sessions, with the short timers of the test.
func testPeers() map[string]Peer {
	timers := func(p Peer) Peer {
		p.HoldTime, p.KeepaliveTime, p.ConnectTime = 3*time.Second, time.Second, time.Second
		return p
	}
	v4 := func(s string) netip.Addr { return netip.MustParseAddr("172.31.249." + s) }
	return map[string]Peer{
		"v4":      timers(Peer{Name: "v4", Address: routerV4, SourceAddress: nodeV4, ASN: routerASN, LocalASN: nodeASN, GracefulRestart: true}),
		"v6":      timers(Peer{Name: "v6", Address: routerV6, SourceAddress: nodeV6, ASN: routerASN, LocalASN: nodeASN}),
		"ibgp":    timers(Peer{Name: "ibgp", Address: v4("11"), SourceAddress: v4("3"), ASN: routerASN, LocalASN: routerASN}),
		"md5":     timers(Peer{Name: "md5", Address: v4("12"), SourceAddress: v4("4"), ASN: routerASN, LocalASN: nodeASN, Password: md5Secret}),
		"badas":   timers(Peer{Name: "badas", Address: v4("13"), SourceAddress: v4("5"), ASN: routerASN, LocalASN: nodeASN}),
		"refused": timers(Peer{Name: "refused", Address: v4("14"), Port: 1179, SourceAddress: v4("6"), ASN: routerASN, LocalASN: nodeASN}),
		"wrongas": timers(Peer{Name: "wrongas", Address: v4("15"), SourceAddress: v4("7"), ASN: 64599, LocalASN: nodeASN}),
	}
}

func peerList(m map[string]Peer) []Peer {
	var l []Peer
	for _, name := range sortedKeys(m) {
		l = append(l, m[name])
	}
	return l
}

func u32(v uint32) *uint32 { return &v }

func TestAgainstFRR(t *testing.T) {
	lab := setupLab(t)
	lab.startFRR(t, false)
	h := startHelper(t, lab)

	peers := testPeers()
	r1 := Route{Prefix: vip1, NextHop: nodeV4, Communities: []string{"65000:100", "65000:1:2", "no-export"}, LocalPref: u32(250), Peers: []string{"v4", "ibgp", "md5"}}
	r2 := Route{Prefix: vip2, NextHop: nodeV4, Peers: []string{"v4"}} // never to ibgp or md5
	r6 := Route{Prefix: vip6, NextHop: nodeV6, Communities: []string{"65000:600"}, Peers: []string{"v6"}}
	r6b := Route{Prefix: vip6b, NextHop: nodeV6, Peers: []string{"v4"}} // IPv6 over the IPv4 session
	h.apply(t, peerList(peers), []Route{r1, r2, r6, r6b}, "")

	for _, name := range []string{"v4", "v6", "ibgp", "md5"} {
		h.waitStatus(t, 20*time.Second, name+" Established", func(s map[string]PeerStatus) (bool, string) {
			return s[name].State == StateEstablished, fmt.Sprintf("%+v", s[name])
		})
	}
	v4Conns := lab.neighbor(t, nodeV4).ConnectionsEstablished

	t.Run("IPv4 route in RIB", func(t *testing.T) {
		lab.waitRIB(t, vip1, true, nodeV4)
		lab.waitRIB(t, vip2, true, nodeV4)
	})
	t.Run("IPv6 route in RIB", func(t *testing.T) {
		lab.waitRIB(t, vip6, true, nodeV6)
		p := lab.waitPath(t, vip6, nodeV6)
		if p.Community.String != "65000:600" {
			t.Errorf("IPv6 path communities %q, want 65000:600", p.Community.String)
		}
	})
	t.Run("IPv6 route over the IPv4 session", func(t *testing.T) {
		p := lab.waitPath(t, vip6b, nodeV4)
		if !slices.ContainsFunc(p.Nexthops, func(n frrNexthop) bool { return n.IP == nodeV6.String() }) {
			t.Errorf("%s from %s has next hops %+v, want %s", vip6b, nodeV4, p.Nexthops, nodeV6)
		}
	})
	t.Run("communities and local preference", func(t *testing.T) {
		ebgp := lab.waitPath(t, vip1, nodeV4)
		if ebgp.Community.String != "65000:100 no-export" || ebgp.LargeCommunity.String != "65000:1:2" {
			t.Errorf("eBGP path communities %q large %q, want \"65000:100 no-export\" and \"65000:1:2\"", ebgp.Community.String, ebgp.LargeCommunity.String)
		}
		if ebgp.LocPrf != nil {
			t.Errorf("eBGP path has local preference %d; it is for iBGP only", *ebgp.LocPrf)
		}
		if ebgp.ASPath.String != strconv.Itoa(nodeASN) {
			t.Errorf("eBGP path AS path %q, want %d", ebgp.ASPath.String, nodeASN)
		}
		ibgp := lab.waitPath(t, vip1, netip.MustParseAddr("172.31.249.3"))
		if ibgp.LocPrf == nil || *ibgp.LocPrf != 250 {
			t.Errorf("iBGP path local preference %v, want 250", ibgp.LocPrf)
		}
		if ibgp.Community.String != "65000:100 no-export" || ibgp.LargeCommunity.String != "65000:1:2" {
			t.Errorf("iBGP path communities %q large %q", ibgp.Community.String, ibgp.LargeCommunity.String)
		}
		if !slices.ContainsFunc(ibgp.Nexthops, func(n frrNexthop) bool { return n.IP == nodeV4.String() }) {
			t.Errorf("iBGP path next hops %+v, want %s", ibgp.Nexthops, nodeV4)
		}
	})
	t.Run("route only to its peers", func(t *testing.T) {
		// vip2 is for v4 only: by now ibgp and md5 have vip1, which came
		// in the same batch, and not vip2.
		lab.waitPath(t, vip1, netip.MustParseAddr("172.31.249.4"))
		if from := lab.pathSources(t, vip2); !slices.Equal(from, []string{nodeV4.String()}) {
			t.Errorf("%s learned from %v, want only %s", vip2, from, nodeV4)
		}
		if n := lab.neighborPrefixes(t, netip.MustParseAddr("172.31.249.3")); n != 1 {
			t.Errorf("iBGP session carries %d IPv4 prefixes, want 1 (%s)", n, vip1)
		}
		st := h.status(t)
		if st.Peers["v4"].Advertised != 3 || st.Peers["ibgp"].Advertised != 1 || st.Peers["v6"].Advertised != 1 {
			t.Errorf("Advertised counts v4=%d ibgp=%d v6=%d, want 3, 1, 1", st.Peers["v4"].Advertised, st.Peers["ibgp"].Advertised, st.Peers["v6"].Advertised)
		}
	})

	t.Run("adding a route sends one UPDATE", func(t *testing.T) {
		before := lab.neighbor(t, nodeV4)
		first := lab.waitPath(t, vip1, nodeV4)
		// FRR computes lastUpdate from the path's age in whole seconds,
		// so it wobbles by one; a real update would move it by two.
		time.Sleep(2100 * time.Millisecond)
		r3 := Route{Prefix: vip3, NextHop: nodeV4, Peers: []string{"v4"}}
		h.apply(t, peerList(peers), []Route{r1, r2, r3, r6, r6b}, "")
		lab.waitRIB(t, vip3, true, nodeV4)
		time.Sleep(300 * time.Millisecond) // any further UPDATE would arrive now
		after := lab.neighbor(t, nodeV4)
		if got := after.MessageStats.UpdatesRecv - before.MessageStats.UpdatesRecv; got != 1 {
			t.Errorf("FRR received %d UPDATEs from v4 for one new route, want 1", got)
		}
		if again := lab.waitPath(t, vip1, nodeV4); again.LastUpdate.Epoch-first.LastUpdate.Epoch > 1 {
			t.Errorf("%s updated again (lastUpdate %d, was %d) when another route was added", vip1, again.LastUpdate.Epoch, first.LastUpdate.Epoch)
		}
	})

	t.Run("changing a route's peers", func(t *testing.T) {
		r3 := Route{Prefix: vip3, NextHop: nodeV4, Peers: []string{"v4", "ibgp"}}
		before := lab.neighbor(t, nodeV4)
		h.apply(t, peerList(peers), []Route{r1, r2, r3, r6, r6b}, "")
		ibgpAddr := netip.MustParseAddr("172.31.249.3")
		lab.waitPath(t, vip3, ibgpAddr)
		// And back: withdrawn from ibgp only.
		r3.Peers = []string{"v4"}
		h.apply(t, peerList(peers), []Route{r1, r2, r3, r6, r6b}, "")
		netnstest.WaitFor(t, 10*time.Second, vip3.String()+" withdrawn from the iBGP session", func() (bool, string) {
			from := lab.pathSources(t, vip3)
			return slices.Equal(from, []string{nodeV4.String()}), fmt.Sprintf("learned from %v", from)
		})
		time.Sleep(300 * time.Millisecond)
		if after := lab.neighbor(t, nodeV4); after.MessageStats.UpdatesRecv != before.MessageStats.UpdatesRecv {
			t.Errorf("v4 got %d UPDATEs while only the iBGP session's routes changed", after.MessageStats.UpdatesRecv-before.MessageStats.UpdatesRecv)
		}
	})

	t.Run("removing a route withdraws it", func(t *testing.T) {
		h.apply(t, peerList(peers), []Route{r1, r2, r6, r6b}, "")
		lab.waitRIB(t, vip3, false, netip.Addr{})
		if _, ok := lab.ribRoute(t, vip1); !ok {
			t.Errorf("%s left FRR's RIB when %s was removed", vip1, vip3)
		}
	})

	t.Run("changing a route's attributes", func(t *testing.T) {
		before := lab.neighbor(t, nodeV4)
		r1.Communities = []string{"65000:200"}
		h.apply(t, peerList(peers), []Route{r1, r2, r6, r6b}, "")
		netnstest.WaitFor(t, 10*time.Second, vip1.String()+" with its new community", func() (bool, string) {
			p := lab.waitPath(t, vip1, nodeV4)
			return p.Community.String == "65000:200" && p.LargeCommunity.String == "", fmt.Sprintf("%+v", p)
		})
		time.Sleep(300 * time.Millisecond)
		if got := lab.neighbor(t, nodeV4).MessageStats.UpdatesRecv - before.MessageStats.UpdatesRecv; got != 1 {
			t.Errorf("FRR received %d UPDATEs from v4 for one changed route, want 1", got)
		}
		if _, ok := lab.ribRoute(t, vip1); !ok {
			t.Errorf("%s left FRR's RIB while it was updated", vip1)
		}
	})

	t.Run("wrong ASN", func(t *testing.T) {
		// The router expects another AS from the node: it rejects the
		// node's OPEN. GoBGP does not pass the NOTIFICATION's code on.
		st := h.waitStatus(t, 15*time.Second, "badas LastError", func(s map[string]PeerStatus) (bool, string) {
			e := s["badas"].LastError
			return strings.Contains(e, "OPEN") && strings.Contains(e, "AS 64513") && strings.Contains(e, "bad peer AS"), fmt.Sprintf("%+v", s["badas"])
		})
		t.Logf("badas: %+v", st.Peers["badas"])
		// The node expects another AS from the router: it says so itself.
		st = h.waitStatus(t, 15*time.Second, "wrongas LastError", func(s map[string]PeerStatus) (bool, string) {
			e := s["wrongas"].LastError
			return strings.Contains(e, "sent NOTIFICATION") && strings.Contains(e, "Bad Peer AS"), fmt.Sprintf("%+v", s["wrongas"])
		})
		t.Logf("wrongas: %+v", st.Peers["wrongas"])
		for _, name := range []string{"badas", "wrongas"} {
			if st.Peers[name].State == StateEstablished {
				t.Errorf("%s is Established", name)
			}
		}
		if !lab.frrLogged("Bad Peer AS") {
			t.Error("FRR did not log the Bad Peer AS it sent")
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		st := h.waitStatus(t, 15*time.Second, "refused LastError", func(s map[string]PeerStatus) (bool, string) {
			return strings.Contains(s["refused"].LastError, "connection refused"), fmt.Sprintf("%+v", s["refused"])
		})
		t.Logf("refused: %+v", st.Peers["refused"])
	})

	t.Run("MD5 password", func(t *testing.T) {
		if n := lab.neighbor(t, netip.MustParseAddr("172.31.249.4")); n.BGPState != "Established" {
			t.Fatalf("FRR's session with the MD5 peer is %s", n.BGPState)
		}
		others := lab.neighbor(t, nodeV4)
		peers["md5"] = func(p Peer) Peer { p.Password = "wrong"; return p }(peers["md5"])
		h.apply(t, peerList(peers), []Route{r1, r2, r6, r6b}, "")
		st := h.waitStatus(t, 15*time.Second, "md5 LastError after a password change", func(s map[string]PeerStatus) (bool, string) {
			return s["md5"].State != StateEstablished && strings.Contains(s["md5"].LastError, "MD5"), fmt.Sprintf("%+v", s["md5"])
		})
		t.Logf("md5 with a wrong password: %+v", st.Peers["md5"])
		time.Sleep(2 * time.Second) // a couple more connect attempts
		if s := h.status(t).Peers["md5"]; s.State == StateEstablished {
			t.Errorf("session with a wrong password is Established")
		}
		// Replacing one peer leaves the others alone: not even an UPDATE.
		if n := lab.neighbor(t, nodeV4); n.MessageStats.UpdatesRecv != others.MessageStats.UpdatesRecv || n.ConnectionsEstablished != others.ConnectionsEstablished {
			t.Errorf("v4 session touched by the md5 peer's change: %d UPDATEs, %d connections (were %d, %d)",
				n.MessageStats.UpdatesRecv, n.ConnectionsEstablished, others.MessageStats.UpdatesRecv, others.ConnectionsEstablished)
		}
	})

	t.Run("other sessions untouched", func(t *testing.T) {
		st := h.status(t)
		for _, name := range []string{"v4", "v6", "ibgp"} {
			if st.Peers[name].State != StateEstablished {
				t.Errorf("%s is %s after the other peers' trouble", name, st.Peers[name].State)
			}
		}
		if n := lab.neighbor(t, nodeV4); n.ConnectionsEstablished != v4Conns || n.BGPState != "Established" {
			t.Errorf("FRR's v4 session: %s, established %d times (was %d)", n.BGPState, n.ConnectionsEstablished, v4Conns)
		}
		if st.Changes == 0 {
			t.Error("Changes() never signalled")
		}
	})

	before4 := lab.neighbor(t, nodeV4)
	t.Run("shutdown withdraws from the peers without graceful restart and sends them a Cease", func(t *testing.T) {
		before6 := lab.neighbor(t, nodeV6)
		h.shutdown(t)
		// The helper is still running: the routes must be gone already.
		lab.waitRIB(t, vip6, false, netip.Addr{})
		n := lab.neighbor(t, nodeV6)
		if got := n.MessageStats.UpdatesRecv - before6.MessageStats.UpdatesRecv; got < 1 {
			t.Errorf("FRR received no withdrawal from v6 before the session closed")
		}
		if !strings.Contains(n.LastResetDueTo+n.LastNotificationReason, "Cease") || n.BGPState == "Established" {
			t.Errorf("FRR's v6 session: %s, last reset %q, notification %q; want closed by a Cease", n.BGPState, n.LastResetDueTo, n.LastNotificationReason)
		}
		t.Logf("FRR's v6 session: last reset %q, notification %q, %q", n.LastResetDueTo, n.LastNotificationReason, n.LastShutdownDescription)
		if !lab.frrLogged("Cease") {
			t.Errorf("FRR did not log a Cease")
		}
	})

	t.Run("a peer with graceful restart keeps the routes while the speaker restarts", func(t *testing.T) {
		// Shutdown sent v4 nothing: no withdrawal, no NOTIFICATION.
		n := lab.neighbor(t, nodeV4)
		if n.BGPState != "Established" || n.MessageStats.UpdatesRecv != before4.MessageStats.UpdatesRecv {
			t.Fatalf("FRR's v4 session after the shutdown: %s, %d UPDATEs (were %d); want established and untouched",
				n.BGPState, n.MessageStats.UpdatesRecv, before4.MessageStats.UpdatesRecv)
		}
		lab.waitRIB(t, vip2, true, nodeV4)
		// From here on, vip2 (announced to v4 only) must never leave FRR's RIB.
		stop := make(chan struct{})
		gone := make(chan string, 1)
		go func() {
			defer close(gone)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if nhs, ok := lab.ribRoute(t, vip2); !ok || !slices.Equal(nhs, []string{nodeV4.String()}) {
					gone <- fmt.Sprintf("%s: present %t, next hops %v", time.Now().Format("15:04:05.000"), ok, nhs)
					return
				}
			}
		}()
		// The process exits: the session ends without a NOTIFICATION.
		_, _ = h.Stop(t)
		netnstest.WaitFor(t, 10*time.Second, "FRR's v4 session down", func() (bool, string) {
			n := lab.neighbor(t, nodeV4)
			return n.BGPState != "Established", n.BGPState
		})
		time.Sleep(2 * time.Second)
		// The next speaker.
		next := startHelper(t, lab)
		next.apply(t, []Peer{peers["v4"]}, []Route{r2}, "")
		next.waitStatus(t, 20*time.Second, "v4 Established again", func(s map[string]PeerStatus) (bool, string) {
			return s["v4"].State == StateEstablished, fmt.Sprintf("%+v", s["v4"])
		})
		// vip1, which the new speaker does not announce, leaves FRR's RIB only
		// once the new session has sent its routes and End-of-RIB.
		lab.waitRIB(t, vip1, false, netip.Addr{})
		close(stop)
		if msg, ok := <-gone; ok {
			t.Errorf("vip2 left FRR's RIB over the restart: %s", msg)
		}
		lab.waitRIB(t, vip2, true, nodeV4)
		next.shutdown(t)
	})
}

// lab is the test network and its FRR.
type lab struct {
	router, node         string // namespaces
	routerLink, nodeLink string
	dir                  string // FRR's files, owned by frr
	procs                map[string]*exec.Cmd
}

func setupLab(t *testing.T) *lab {
	t.Helper()
	netnstest.RequireRoot(t, "./speaker/bgp/")
	netnstest.RequireTools(t, "iproute2 and frr", "ip", "vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd")
	router, node := netnstest.VethPair(t, "ilbb",
		netnstest.Side{Suffix: "r", Addrs: []string{"172.31.249.1/24", "172.31.249.11/24", "172.31.249.12/24", "172.31.249.13/24", "172.31.249.14/24", "172.31.249.15/24", "fd31:0:0:f90::1/64"}},
		netnstest.Side{Suffix: "n", Addrs: []string{"172.31.249.2/24", "172.31.249.3/24", "172.31.249.4/24", "172.31.249.5/24", "172.31.249.6/24", "172.31.249.7/24", "fd31:0:0:f90::2/64"}})
	l := &lab{router: router.NS, node: node.NS, routerLink: router.Link, nodeLink: node.Link, procs: map[string]*exec.Cmd{}}

	// FRR drops to user frr, which must reach its files: a directory of
	// its own under one it can traverse (t.TempDir's are root-only).
	dir, err := os.MkdirTemp("", fmt.Sprintf("ilbb-%d-frr-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // the daemons' logs are in the test log on failure
	l.dir = dir
	return l
}

// frrConfig is bgpd's configuration. withBFD, the v4 and v6 neighbors
// also run BFD (profile frrBFDProfile) and have a hold time of 90 s, so
// that only BFD can drop them within a minute.
func (l *lab) frrConfig(withBFD bool) string {
	var b strings.Builder
	b.WriteString(`frr defaults datacenter
hostname ilbb-router
log stdout debugging
!
router bgp 64512
 bgp router-id 172.31.249.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp log-neighbor-changes
 timers bgp 1 3
`)
	neighbors := []struct {
		addr string
		asn  int
		v6   bool
	}{
		{"172.31.249.2", nodeASN, false},
		{"172.31.249.3", routerASN, false},
		{"172.31.249.4", nodeASN, false},
		{"172.31.249.5", 64599, false},
		{"172.31.249.7", nodeASN, false},
		{"fd31:0:0:f90::2", nodeASN, true},
	}
	for _, n := range neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s passive\n neighbor %s timers connect 1\n", n.addr, n.asn, n.addr, n.addr)
	}
	fmt.Fprintf(&b, " neighbor 172.31.249.4 password %s\n", md5Secret)
	if withBFD {
		for _, addr := range []netip.Addr{nodeV4, nodeV6} {
			fmt.Fprintf(&b, " neighbor %s timers %d %d\n neighbor %s bfd profile %s\n",
				addr, bfdTestKeepalive/time.Second, bfdTestHold/time.Second, addr, frrBFDProfile)
		}
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, n := range neighbors {
		if !n.v6 {
			fmt.Fprintf(&b, "  neighbor %s activate\n", n.addr)
		}
	}
	b.WriteString(" exit-address-family\n address-family ipv6 unicast\n")
	// The IPv4 session carries IPv6 too.
	b.WriteString("  neighbor fd31:0:0:f90::2 activate\n  neighbor 172.31.249.2 activate\n")
	b.WriteString(" exit-address-family\n!\n")
	return b.String()
}

// frrBFDConfig is bfdd's configuration: the profile of the neighbors with
// BFD, 300 ms both ways and three packets missed.
func frrBFDConfig() string {
	return fmt.Sprintf(`hostname ilbb-router
log stdout debugging
!
bfd
 profile %s
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
`, frrBFDProfile)
}

// startFRR runs zebra and bgpd in the router namespace with paths of their
// own, so that they meet neither a system FRR nor another test's; withBFD,
// bfdd too, and BFD on the v4 and v6 neighbors (frrConfig).
func (l *lab) startFRR(t *testing.T, withBFD bool) {
	t.Helper()
	if withBFD {
		netnstest.RequireTools(t, "frr", "/usr/lib/frr/bfdd")
	}
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("FRR is not installed (apt-get install frr): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	files := map[string]string{
		"zebra.conf": "hostname ilbb-router\nlog stdout informational\n",
		"bgpd.conf":  l.frrConfig(withBFD),
	}
	if withBFD {
		files["bfdd.conf"] = frrBFDConfig()
	}
	if err := os.Chown(l.dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		path := filepath.Join(l.dir, name)
		if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pathspace := filepath.Base(l.dir)
	t.Cleanup(func() { os.RemoveAll(filepath.Join("/var/run/frr", pathspace)) })
	args := func(daemon string) []string {
		return []string{
			"-N", pathspace,
			"-i", filepath.Join(l.dir, daemon+".pid"),
			"--vty_socket", l.dir,
			"-z", filepath.Join(l.dir, "zserv.api"),
			"-f", filepath.Join(l.dir, daemon+".conf"),
			"-u", "frr", "-g", "frr",
		}
	}
	l.start(t, "zebra", args("zebra")...)
	netnstest.WaitFor(t, 20*time.Second, "zebra's socket", func() (bool, string) {
		_, err := os.Stat(filepath.Join(l.dir, "zserv.api"))
		return err == nil && l.alive("zebra"), l.tail("zebra")
	})
	if withBFD {
		l.start(t, "bfdd", append(args("bfdd"), "--bfdctl", filepath.Join(l.dir, "bfdd.sock"))...)
		netnstest.WaitFor(t, 20*time.Second, "bfdd's vty socket", func() (bool, string) {
			_, err := os.Stat(filepath.Join(l.dir, "bfdd.vty"))
			return err == nil && l.alive("bfdd"), l.tail("bfdd")
		})
	}
	l.start(t, "bgpd", args("bgpd")...)
	netnstest.WaitFor(t, 30*time.Second, "bgpd answering vtysh", func() (bool, string) {
		if !l.alive("bgpd") {
			t.Fatalf("bgpd exited:\n%s", l.tail("bgpd"))
		}
		out, err := l.vtysh("show bgp summary json")
		return err == nil && strings.HasPrefix(strings.TrimSpace(out), "{"), out
	})
}

// start runs an FRR daemon in the router namespace, logging to a file, and
// stops it when the test ends.
func (l *lab) start(t *testing.T, daemon string, args ...string) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(l.dir, daemon+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.router, "/usr/lib/frr/" + daemon}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", daemon, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	l.procs[daemon] = cmd
	t.Cleanup(func() {
		stop(cmd, done, 5*time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", daemon, l.tail(daemon))
		}
	})
}

// stop ends a process we started: SIGTERM, then SIGKILL after grace.
func stop(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(grace):
		}
	}
}

func (l *lab) alive(daemon string) bool {
	cmd := l.procs[daemon]
	return cmd != nil && cmd.Process != nil && syscall.Kill(cmd.Process.Pid, 0) == nil && !exited(cmd.Process.Pid)
}

// exited reports a zombie: killed by signal 0 successfully, yet gone.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

// tail is the end of a daemon's log.
func (l *lab) tail(daemon string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, daemon+".log"))
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func (l *lab) frrLogged(s string) bool {
	b, _ := os.ReadFile(filepath.Join(l.dir, "bgpd.log"))
	return strings.Contains(string(b), s)
}

func (l *lab) vtysh(commands ...string) (string, error) {
	args := []string{"netns", "exec", l.router, "vtysh", "--vty_socket", l.dir}
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	return netnstest.Run("ip", args...)
}

func (l *lab) vtyshJSON(t *testing.T, command string, v any) {
	t.Helper()
	out, err := l.vtysh(command)
	if err != nil {
		t.Fatalf("vtysh %q: %v\n%s", command, err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("vtysh %q: %v\n%s", command, err, out)
	}
}

// frrPath is one path of `show bgp ... <prefix> json`.
type frrPath struct {
	ASPath         struct{ String string } `json:"aspath"`
	Community      struct{ String string } `json:"community"`
	LargeCommunity struct{ String string } `json:"largeCommunity"`
	LocPrf         *uint32                 `json:"locPrf"`
	LastUpdate     struct{ Epoch int64 }   `json:"lastUpdate"`
	Nexthops       []frrNexthop            `json:"nexthops"`
	Peer           struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
}

type frrNexthop struct {
	IP string `json:"ip"`
}

func (l *lab) paths(t *testing.T, pfx netip.Prefix) []frrPath {
	t.Helper()
	afi := "ipv4"
	if pfx.Addr().Is6() {
		afi = "ipv6"
	}
	var out struct {
		Paths []frrPath `json:"paths"`
	}
	l.vtyshJSON(t, fmt.Sprintf("show bgp %s unicast %s json", afi, pfx), &out)
	return out.Paths
}

// pathSources are the sessions FRR has a path for pfx from, sorted.
func (l *lab) pathSources(t *testing.T, pfx netip.Prefix) []string {
	t.Helper()
	var from []string
	for _, p := range l.paths(t, pfx) {
		from = append(from, p.Peer.PeerID)
	}
	slices.Sort(from)
	return from
}

// waitPath waits for FRR's path for pfx from the session with the node's
// address from.
func (l *lab) waitPath(t *testing.T, pfx netip.Prefix, from netip.Addr) frrPath {
	t.Helper()
	var found frrPath
	netnstest.WaitFor(t, 10*time.Second, fmt.Sprintf("path for %s from %s", pfx, from), func() (bool, string) {
		ps := l.paths(t, pfx)
		for _, p := range ps {
			if p.Peer.PeerID == from.String() {
				found = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("paths %+v", ps)
	})
	return found
}

// ribRoute returns the next hops of FRR's selected route for pfx.
func (l *lab) ribRoute(t *testing.T, pfx netip.Prefix) ([]string, bool) {
	t.Helper()
	cmd := "show ip route %s json"
	if pfx.Addr().Is6() {
		cmd = "show ipv6 route %s json"
	}
	var out map[string][]struct {
		Protocol string `json:"protocol"`
		Selected bool   `json:"selected"`
		Nexthops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	l.vtyshJSON(t, fmt.Sprintf(cmd, pfx), &out)
	for _, r := range out[pfx.String()] {
		if r.Protocol == "bgp" && r.Selected {
			var nhs []string
			for _, nh := range r.Nexthops {
				if nh.Active {
					nhs = append(nhs, nh.IP)
				}
			}
			return nhs, true
		}
	}
	return nil, false
}

// waitRIB waits until FRR's RIB has (present) a BGP route for pfx via
// nextHop, or has none (!present).
func (l *lab) waitRIB(t *testing.T, pfx netip.Prefix, present bool, nextHop netip.Addr) {
	t.Helper()
	what := fmt.Sprintf("%s in FRR's RIB via %s", pfx, nextHop)
	if !present {
		what = fmt.Sprintf("%s gone from FRR's RIB", pfx)
	}
	netnstest.WaitFor(t, 10*time.Second, what, func() (bool, string) {
		nhs, ok := l.ribRoute(t, pfx)
		if !present {
			return !ok, fmt.Sprintf("next hops %v", nhs)
		}
		return ok && slices.Equal(nhs, []string{nextHop.String()}), fmt.Sprintf("present %v, next hops %v", ok, nhs)
	})
}

// frrNeighbor is the part of `show bgp neighbors <addr> json` the test reads.
type frrNeighbor struct {
	BGPState                string `json:"bgpState"`
	ConnectionsEstablished  int    `json:"connectionsEstablished"`
	LastResetDueTo          string `json:"lastResetDueTo"`
	LastNotificationReason  string `json:"lastNotificationReason"`
	LastShutdownDescription string `json:"lastShutdownDescription"`
	HoldTimeMsecs           int    `json:"bgpTimerHoldTimeMsecs"`
	UpMsec                  int64  `json:"bgpTimerUpMsec"`
	BFD                     struct {
		Status string `json:"status"`
	} `json:"peerBfdInfo"`
	MessageStats struct {
		UpdatesRecv int `json:"updatesRecv"`
	} `json:"messageStats"`
	AddressFamilyInfo map[string]struct {
		AcceptedPrefixCounter int `json:"acceptedPrefixCounter"`
	} `json:"addressFamilyInfo"`
}

func (l *lab) neighbor(t *testing.T, addr netip.Addr) frrNeighbor {
	t.Helper()
	var out map[string]frrNeighbor
	l.vtyshJSON(t, fmt.Sprintf("show bgp neighbors %s json", addr), &out)
	n, ok := out[addr.String()]
	if !ok {
		t.Fatalf("FRR has no neighbor %s", addr)
	}
	return n
}

// neighborPrefixes is the number of IPv4 unicast prefixes FRR accepted from
// the session with the node's address addr.
func (l *lab) neighborPrefixes(t *testing.T, addr netip.Addr) int {
	t.Helper()
	return l.neighbor(t, addr).AddressFamilyInfo["ipv4Unicast"].AcceptedPrefixCounter
}

// desiredState is what the test asks the helper to apply.
type desiredState struct {
	Gen      int
	Peers    []Peer
	Routes   []Route
	Shutdown bool
}

// helperStatus is what the helper reports.
type helperStatus struct {
	Gen     int    // last desired state applied
	Error   string // error of applying it
	Changes int    // Changes() signals so far
	Peers   map[string]PeerStatus
}

// helper is the Manager process in the node namespace.
type helper struct {
	*netnstest.Helper
	dir string // desired.json, status.json and helper.log
	gen int
}

func startHelper(t *testing.T, l *lab) *helper {
	t.Helper()
	h := &helper{dir: t.TempDir()}
	h.writeDesired(t, desiredState{})
	h.Helper = netnstest.StartHelper(t, netnstest.HelperConfig{
		Namespace: l.node,
		Test:      "TestHelperManager",
		Env:       []string{helperDirEnv + "=" + h.dir},
		Args:      []string{"-test.v"},
		LogPath:   filepath.Join(h.dir, "helper.log"),
	})
	return h
}

func (h *helper) writeDesired(t *testing.T, d desiredState) {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	netnstest.WriteFileAtomic(t, filepath.Join(h.dir, "desired.json"), b)
}

// apply has the helper set peers and routes, and waits until it did.
// wantErr is a part of the error SetPeers/SetRoutes must return, "" for
// none.
func (h *helper) apply(t *testing.T, peers []Peer, routes []Route, wantErr string) {
	t.Helper()
	h.gen++
	h.writeDesired(t, desiredState{Gen: h.gen, Peers: peers, Routes: routes})
	h.WaitLine(t, fmt.Sprintf("applied %d", h.gen), 10*time.Second)
	st := h.waitStatus(t, 5*time.Second, "status after applying", func(map[string]PeerStatus) (bool, string) { return true, "" })
	if wantErr == "" && st.Error != "" || !strings.Contains(st.Error, wantErr) {
		t.Fatalf("applying generation %d: error %q, want one containing %q", h.gen, st.Error, wantErr)
	}
}

func (h *helper) shutdown(t *testing.T) {
	t.Helper()
	h.gen++
	h.writeDesired(t, desiredState{Gen: h.gen, Shutdown: true})
	h.WaitLine(t, "shutdown done", 15*time.Second)
}

func (h *helper) status(t *testing.T) helperStatus {
	t.Helper()
	var st helperStatus
	b, err := os.ReadFile(filepath.Join(h.dir, "status.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return st
		}
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("helper status: %v\n%s", err, b)
	}
	return st
}

// waitStatus waits for a status of the current generation that satisfies
// cond, and returns it.
func (h *helper) waitStatus(t *testing.T, timeout time.Duration, what string, cond func(map[string]PeerStatus) (bool, string)) helperStatus {
	t.Helper()
	var st helperStatus
	netnstest.WaitFor(t, timeout, what, func() (bool, string) {
		st = h.status(t)
		if st.Gen < h.gen {
			return false, fmt.Sprintf("status of generation %d", st.Gen)
		}
		return cond(st.Peers)
	})
	return st
}

// TestHelperManager is the Manager process of TestAgainstFRR and
// TestBFDAgainstFRR, which start it in the node namespace; it runs the BFD
// sessions peers ask for. Run directly, it does nothing.
func TestHelperManager(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4), textlogger.Output(os.Stderr)))
	ctx, cancel := netnstest.HelperContext()
	defer cancel()
	mux := bfd.NewMux(logger.WithName("bfd"))
	defer mux.Close()
	m, err := New(ctx, Config{RouterID: nodeV4, Logger: logger, BFD: mux})
	if err != nil {
		t.Fatal(err)
	}

	st := helperStatus{}
	shutDown := false
	var lastStatus time.Time
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-m.Changes():
			st.Changes++
		case <-tick.C:
		}
		var d desiredState
		b, err := os.ReadFile(filepath.Join(dir, "desired.json"))
		if err == nil {
			err = json.Unmarshal(b, &d)
		}
		if err != nil {
			t.Error(err)
			continue
		}
		if d.Gen > st.Gen && !shutDown {
			if d.Shutdown {
				m.Shutdown(ctx)
				shutDown = true
				fmt.Println("shutdown done")
				continue
			}
			st.Error = ""
			if err := errors.Join(m.SetPeers(ctx, d.Peers), m.SetRoutes(ctx, d.Routes)); err != nil {
				st.Error = err.Error()
			}
			st.Gen = d.Gen
			st.Peers = m.Status(ctx)
			b, _ := json.Marshal(st)
			netnstest.WriteFileAtomic(t, filepath.Join(dir, "status.json"), b)
			fmt.Printf("applied %d\n", d.Gen)
			continue
		}
		if !shutDown && time.Since(lastStatus) > 200*time.Millisecond {
			lastStatus = time.Now()
			st.Peers = m.Status(ctx)
			b, _ := json.Marshal(st)
			netnstest.WriteFileAtomic(t, filepath.Join(dir, "status.json"), b)
		}
	}
	if !shutDown {
		m.Shutdown(context.Background())
	}
}
