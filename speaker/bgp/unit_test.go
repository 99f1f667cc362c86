package bgp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"k8s.io/klog/v2/ktesting"
)

func TestParseCommunities(t *testing.T) {
	c, err := parseCommunities([]string{"65000:100", " 65000:1:2 ", "NO-EXPORT", "blackhole", "65000:100", "1:2", "0:0:0", "4294967295:4294967295:4294967295"})
	if err != nil {
		t.Fatal(err)
	}
	wantStd := []uint32{1<<16 | 2, 65000<<16 | 100, 0xFFFF029A, 0xFFFFFF01}
	if !slices.Equal(c.standard, wantStd) {
		t.Errorf("standard %x, want %x (sorted, without duplicates)", c.standard, wantStd)
	}
	wantLarge := []largeCommunity{{0, 0, 0}, {65000, 1, 2}, {4294967295, 4294967295, 4294967295}}
	if !slices.Equal(c.large, wantLarge) {
		t.Errorf("large %v, want %v", c.large, wantLarge)
	}
	for name, v := range map[string]uint32{
		"no-export": 0xFFFFFF01, "no-advertise": 0xFFFFFF02, "no-export-subconfed": 0xFFFFFF03,
		"no-peer": 0xFFFFFF04, "blackhole": 0xFFFF029A, "graceful-shutdown": 0xFFFF0000,
	} {
		if c, err := parseCommunities([]string{name}); err != nil || !slices.Equal(c.standard, []uint32{v}) {
			t.Errorf("%s: %x, %v; want %x", name, c.standard, err, v)
		}
	}

	for _, bad := range []string{"65536:1", "1:65536", "-1:2", "a:b", "65000", "1:2:3:4", "", "4294967296:1:1", "1:x:3", "no_export", "65000:100 65000:200"} {
		_, err := parseCommunities([]string{"65000:1", bad})
		if err == nil || !strings.Contains(err.Error(), "community") {
			t.Errorf("%q: error %v, want one about the community", bad, err)
		}
	}
	// Every bad community is reported, not just the first.
	_, err = parseCommunities([]string{"x", "65000:1", "y"})
	if err == nil || !strings.Contains(err.Error(), `"x"`) || !strings.Contains(err.Error(), `"y"`) {
		t.Errorf("two bad communities: error %v, want both named", err)
	}
}

func TestValidateRoute(t *testing.T) {
	lp := uint32(200)
	r, err := validateRoute(Route{
		Prefix: netip.MustParsePrefix("::ffff:172.31.249.101/128"), NextHop: netip.MustParseAddr("::ffff:172.31.249.2"),
		Communities: []string{"65000:2", "65000:1"}, LocalPref: &lp, Peers: []string{"b", "a", "b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.prefix != netip.MustParsePrefix("172.31.249.101/32") || r.nextHop != netip.MustParseAddr("172.31.249.2") {
		t.Errorf("IPv4-mapped route normalized to %s via %s, want 172.31.249.101/32 via 172.31.249.2", r.prefix, r.nextHop)
	}
	if !slices.Equal(r.peers, []string{"a", "b"}) || *r.localPref != 200 {
		t.Errorf("peers %v local preference %d", r.peers, *r.localPref)
	}
	lp = 300 // the Manager keeps its own copy
	if *r.localPref != 200 {
		t.Error("route shares the caller's LocalPref")
	}

	v4, v6 := netip.MustParseAddr("172.31.249.2"), netip.MustParseAddr("fd31:0:0:f90::2")
	for _, tc := range []struct {
		route Route
		err   string
	}{
		{Route{NextHop: v4}, "invalid or missing prefix"},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/24"), NextHop: v4}, "host bits set (did you mean 172.31.249.0/24?)"},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32")}, "missing next hop"},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: v6}, "not of the prefix's address family"},
		{Route{Prefix: netip.MustParsePrefix("fd31:0:0:f90::106/128"), NextHop: v4}, "not of the prefix's address family"},
		{Route{Prefix: netip.MustParsePrefix("fd31:0:0:f90::106/128"), NextHop: netip.MustParseAddr("fe80::1")}, "not a global unicast"},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: netip.IPv4Unspecified()}, "not a global unicast"},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: v4, Communities: []string{"bad"}}, `172.31.249.101/32: community "bad"`},
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: v4, Peers: []string{""}}, "empty peer name"},
	} {
		if _, err := validateRoute(tc.route); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want one containing %q", tc.route, err, tc.err)
		}
	}
}

func TestSameAnnouncement(t *testing.T) {
	base := Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: netip.MustParseAddr("172.31.249.2"),
		Communities: []string{"65000:1", "65000:1:1"}, Peers: []string{"a"}}
	mustRoute := func(r Route) route {
		t.Helper()
		v, err := validateRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := mustRoute(base)
	same := base
	same.Communities = []string{"65000:1:1", "65000:1", "65000:1"}
	same.Peers = []string{"b"} // where it goes is not what it says
	if !sameAnnouncement(a, mustRoute(same)) {
		t.Error("reordered communities and other peers make a different announcement")
	}
	lp1, lp2 := uint32(1), uint32(2)
	base.LocalPref = &lp2
	a = mustRoute(base)
	for name, change := range map[string]func(*Route){
		"next hop":         func(r *Route) { r.NextHop = netip.MustParseAddr("172.31.249.3") },
		"communities":      func(r *Route) { r.Communities = []string{"65000:1"} },
		"large community":  func(r *Route) { r.Communities = []string{"65000:1", "65000:1:2"} },
		"local preference": func(r *Route) { r.LocalPref = &lp1 },
		"no local pref":    func(r *Route) { r.LocalPref = nil },
	} {
		other := base
		change(&other)
		if sameAnnouncement(a, mustRoute(other)) {
			t.Errorf("changing the %s makes the same announcement", name)
		}
	}
}

func TestValidatePeer(t *testing.T) {
	p := Peer{Name: "r1", Address: netip.MustParseAddr("172.31.249.1"), ASN: 64512, LocalASN: 64513}
	c, err := validatePeer(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.hold != 9 || c.keepalive != 3 || c.conn != 5 {
		t.Errorf("default timers %d/%d/%d, want 9/3/5", c.hold, c.keepalive, c.conn)
	}
	ap := c.apiPeer("t")
	if ap.Conf.Vrf != "t" || ap.Conf.LocalAsn != 64513 || ap.Timers.Config.HoldTime != 9 || len(ap.AfiSafis) != 2 || ap.EbgpMultihop != nil || ap.GracefulRestart != nil {
		t.Errorf("GoBGP peer %v", ap)
	}
	p.EBGPMultihop, p.GracefulRestart, p.Port = true, true, 1179
	p.SourceAddress = netip.MustParseAddr("172.31.249.2")
	c, _ = validatePeer(p)
	ap = c.apiPeer("t")
	if ap.EbgpMultihop.GetMultihopTtl() != 255 || !ap.GracefulRestart.GetEnabled() || ap.Transport.RemotePort != 1179 ||
		ap.Transport.LocalAddress != "172.31.249.2" || !ap.AfiSafis[0].MpGracefulRestart.Config.Enabled {
		t.Errorf("GoBGP peer %v", ap)
	}

	for _, tc := range []struct {
		change func(*Peer)
		err    string
	}{
		{func(p *Peer) { p.Name = "" }, "without a name"},
		{func(p *Peer) { p.Address = netip.Addr{} }, "r1: invalid address"},
		{func(p *Peer) { p.Address = netip.MustParseAddr("fe80::1%eth0") }, "link-local peers are not supported"},
		{func(p *Peer) { p.ASN = 0 }, "r1: ASN and LocalASN"},
		{func(p *Peer) { p.LocalASN = 0 }, "r1: ASN and LocalASN"},
		{func(p *Peer) { p.HoldTime = 2500 * time.Millisecond }, "r1: hold time 2.5s is not a positive whole number of seconds"},
		{func(p *Peer) { p.HoldTime = 2 * time.Second }, "below the minimum of 3s"},
		{func(p *Peer) { p.KeepaliveTime = 9 * time.Second }, "keepalive time 9s must be below the hold time 9s"},
		{func(p *Peer) { p.ConnectTime = -time.Second }, "connect time"},
		{func(p *Peer) { p.SourceAddress = netip.MustParseAddr("fd31:0:0:f90::2") }, "different families"},
		{func(p *Peer) { p.Password = strings.Repeat("x", 81) }, "password longer than 80"},
	} {
		bad := p
		tc.change(&bad)
		if _, err := validatePeer(bad); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("error %v, want one containing %q", err, tc.err)
		}
	}
}

func mustPeer(t *testing.T, p Peer) peerConfig {
	t.Helper()
	c, err := validatePeer(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiffPeers(t *testing.T) {
	a := mustPeer(t, Peer{Name: "a", Address: netip.MustParseAddr("172.31.249.1"), ASN: 64512, LocalASN: 64513})
	b := mustPeer(t, Peer{Name: "b", Address: netip.MustParseAddr("172.31.249.11"), ASN: 64512, LocalASN: 64513})
	c := mustPeer(t, Peer{Name: "c", Address: netip.MustParseAddr("fd31:0:0:f90::1"), ASN: 64512, LocalASN: 64513})
	b2 := b
	b2.password = "new"
	// Defaults spelled out are the same configuration as defaults left out.
	aExplicit := mustPeer(t, Peer{Name: "a", Address: netip.MustParseAddr("::ffff:172.31.249.1"), ASN: 64512, LocalASN: 64513,
		HoldTime: DefaultHoldTime, KeepaliveTime: DefaultKeepaliveTime, ConnectTime: DefaultConnectTime})

	ch := diffPeers(map[string]peerConfig{"a": a, "b": b}, map[string]peerConfig{"a": aExplicit, "b": b2, "c": c})
	if !slices.Equal(ch.remove, []string{"b"}) {
		t.Errorf("remove %v, want [b] (changed); a is unchanged", ch.remove)
	}
	var added []string
	for _, p := range ch.add {
		added = append(added, p.name)
	}
	if !slices.Equal(added, []string{"b", "c"}) || ch.add[0].password != "new" {
		t.Errorf("add %v, want b (its new configuration) and c", ch.add)
	}

	ch = diffPeers(map[string]peerConfig{"a": a, "b": b}, map[string]peerConfig{"a": a, "b": b})
	if len(ch.remove)+len(ch.add) != 0 {
		t.Errorf("same peers: %+v, want nothing to do", ch)
	}
	ch = diffPeers(map[string]peerConfig{"a": a, "b": b}, nil)
	if !slices.Equal(ch.remove, []string{"a", "b"}) || len(ch.add) != 0 {
		t.Errorf("no peers: %+v, want both removed", ch)
	}
}

func TestDesiredPeers(t *testing.T) {
	m := &Manager{peers: map[string]*peerEntry{}}
	cur := mustPeer(t, Peer{Name: "kept", Address: netip.MustParseAddr("172.31.249.1"), ASN: 64512, LocalASN: 64513})
	m.peers["kept"] = &peerEntry{cfg: cur}
	ok := Peer{Name: "ok", Address: netip.MustParseAddr("172.31.249.11"), ASN: 64512, LocalASN: 64513}
	desired, errs := m.desiredPeers([]Peer{
		{Name: "kept", Address: netip.MustParseAddr("172.31.249.1"), ASN: 64512}, // now invalid: no LocalASN
		ok,
		{Name: "same-address", Address: netip.MustParseAddr("172.31.249.11"), ASN: 64512, LocalASN: 64513},
		ok, // twice
		{Name: "new-invalid", Address: netip.MustParseAddr("172.31.249.12")},
	})
	err := errors.Join(errs...)
	for _, want := range []string{"kept: ASN and LocalASN", "same-address: address 172.31.249.11 is already peer ok's", "ok: given twice", "new-invalid: ASN"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	}
	var named []string
	for _, e := range errs {
		var pe *PeerError
		if !errors.As(e, &pe) {
			t.Errorf("error %v names no peer", e)
			continue
		}
		named = append(named, pe.Peer)
	}
	slices.Sort(named)
	if want := []string{"kept", "new-invalid", "ok", "same-address"}; !slices.Equal(named, want) {
		t.Errorf("errors name peers %v, want %v", named, want)
	}
	if len(desired) != 2 || desired["kept"] != cur || desired["ok"].name != "ok" {
		t.Errorf("desired %v: want ok, and kept with its current configuration", desired)
	}
}

func TestDiffRoutes(t *testing.T) {
	mk := func(pfx string, peers ...string) route {
		r, err := validateRoute(Route{Prefix: netip.MustParsePrefix(pfx), NextHop: netip.MustParseAddr("172.31.249.2"), Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1, r2, r3 := mk("172.31.249.101/32", "a", "b"), mk("172.31.249.102/32", "a"), mk("172.31.249.103/32", "b")
	desired := map[netip.Prefix]route{r1.prefix: r1, r2.prefix: r2, r3.prefix: r3}

	// a has r1 as it is and an old version of r2, and a route gone since.
	oldR2 := r2
	oldR2.communities.standard = []uint32{1}
	gone := mk("172.31.249.104/32", "a")
	sent := map[netip.Prefix]route{r1.prefix: r1, r2.prefix: oldR2, gone.prefix: gone}
	ch := diffRoutes("a", sent, desired)
	if len(ch.announce) != 1 || ch.announce[0].prefix != r2.prefix {
		t.Errorf("announce %v, want only the changed %s: unchanged %s is left alone", ch.announce, r2.prefix, r1.prefix)
	}
	if !slices.Equal(ch.withdraw, []netip.Prefix{gone.prefix}) {
		t.Errorf("withdraw %v, want %s", ch.withdraw, gone.prefix)
	}

	// b had r1 and r2; r2 is no longer for b: withdrawn from b only.
	ch = diffRoutes("b", map[netip.Prefix]route{r1.prefix: r1, r2.prefix: r2}, desired)
	if len(ch.announce) != 1 || ch.announce[0].prefix != r3.prefix || !slices.Equal(ch.withdraw, []netip.Prefix{r2.prefix}) {
		t.Errorf("b: announce %v withdraw %v, want %s and %s", ch.announce, ch.withdraw, r3.prefix, r2.prefix)
	}

	// A route whose peers list changes but says the same is not re-sent
	// to the peers that keep it.
	r1b := mk("172.31.249.101/32", "a")
	ch = diffRoutes("a", map[netip.Prefix]route{r1.prefix: r1}, map[netip.Prefix]route{r1.prefix: r1b})
	if len(ch.announce)+len(ch.withdraw) != 0 {
		t.Errorf("a keeps %s: %+v, want nothing to do", r1.prefix, ch)
	}
	ch = diffRoutes("c", nil, desired)
	if len(ch.announce)+len(ch.withdraw) != 0 {
		t.Errorf("peer without routes: %+v", ch)
	}
}

func TestAPIPath(t *testing.T) {
	lp := uint32(250)
	for _, tc := range []struct {
		route   Route
		family  bgp.RouteFamily
		nextHop string
	}{
		{Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: netip.MustParseAddr("172.31.249.2"),
			Communities: []string{"65000:100", "65000:1:2"}, LocalPref: &lp}, bgp.RF_IPv4_UC, "172.31.249.2"},
		{Route{Prefix: netip.MustParsePrefix("fd31:0:0:f90::106/128"), NextHop: netip.MustParseAddr("fd31:0:0:f90::2")},
			bgp.RF_IPv6_UC, "fd31:0:0:f90::2"},
	} {
		r, err := validateRoute(tc.route)
		if err != nil {
			t.Fatal(err)
		}
		p, err := r.apiPath()
		if err != nil {
			t.Fatal(err)
		}
		if apiutil.ToRouteFamily(p.Family) != tc.family || apiutil.ToRouteFamily(r.family()) != tc.family {
			t.Errorf("%s: family %v, want %v", r.prefix, p.Family, tc.family)
		}
		nlri, err := apiutil.GetNativeNlri(p)
		if err != nil || nlri.String() != r.prefix.String() {
			t.Errorf("%s: NLRI %v, %v", r.prefix, nlri, err)
		}
		attrs, err := apiutil.GetNativePathAttributes(p)
		if err != nil {
			t.Fatal(err)
		}
		got := map[bgp.BGPAttrType]bgp.PathAttributeInterface{}
		for _, a := range attrs {
			got[a.GetType()] = a
		}
		if o, ok := got[bgp.BGP_ATTR_TYPE_ORIGIN].(*bgp.PathAttributeOrigin); !ok || o.Value != bgp.BGP_ORIGIN_ATTR_TYPE_IGP {
			t.Errorf("%s: origin %v, want IGP", r.prefix, got[bgp.BGP_ATTR_TYPE_ORIGIN])
		}
		switch tc.family {
		case bgp.RF_IPv4_UC:
			if nh, ok := got[bgp.BGP_ATTR_TYPE_NEXT_HOP].(*bgp.PathAttributeNextHop); !ok || nh.Value.String() != tc.nextHop {
				t.Errorf("%s: NEXT_HOP %v, want %s", r.prefix, got[bgp.BGP_ATTR_TYPE_NEXT_HOP], tc.nextHop)
			}
			if c, ok := got[bgp.BGP_ATTR_TYPE_COMMUNITIES].(*bgp.PathAttributeCommunities); !ok || !slices.Equal(c.Value, []uint32{65000<<16 | 100}) {
				t.Errorf("%s: communities %v", r.prefix, got[bgp.BGP_ATTR_TYPE_COMMUNITIES])
			}
			if c, ok := got[bgp.BGP_ATTR_TYPE_LARGE_COMMUNITY].(*bgp.PathAttributeLargeCommunities); !ok || len(c.Values) != 1 || c.Values[0].String() != "65000:1:2" {
				t.Errorf("%s: large communities %v", r.prefix, got[bgp.BGP_ATTR_TYPE_LARGE_COMMUNITY])
			}
			if l, ok := got[bgp.BGP_ATTR_TYPE_LOCAL_PREF].(*bgp.PathAttributeLocalPref); !ok || l.Value != 250 {
				t.Errorf("%s: local preference %v", r.prefix, got[bgp.BGP_ATTR_TYPE_LOCAL_PREF])
			}
		case bgp.RF_IPv6_UC:
			if mp, ok := got[bgp.BGP_ATTR_TYPE_MP_REACH_NLRI].(*bgp.PathAttributeMpReachNLRI); !ok || mp.Nexthop.String() != tc.nextHop {
				t.Errorf("%s: MP_REACH_NLRI %v, want next hop %s", r.prefix, got[bgp.BGP_ATTR_TYPE_MP_REACH_NLRI], tc.nextHop)
			}
			for _, typ := range []bgp.BGPAttrType{bgp.BGP_ATTR_TYPE_COMMUNITIES, bgp.BGP_ATTR_TYPE_LARGE_COMMUNITY, bgp.BGP_ATTR_TYPE_LOCAL_PREF, bgp.BGP_ATTR_TYPE_NEXT_HOP} {
				if a, ok := got[typ]; ok {
					t.Errorf("%s: unexpected attribute %v", r.prefix, a)
				}
			}
		}
	}
}

func TestDescribeNotification(t *testing.T) {
	for _, tc := range []struct {
		code, subcode uint8
		want          string
	}{
		{2, 2, "OPEN Message Error / Bad Peer AS"},
		{2, 5, "OPEN Message Error / Authentication Failure"},
		{4, 0, "Hold Timer Expired"},
		{6, 2, "Cease / Administrative Shutdown"},
		{6, 99, "Cease / subcode 99"},
		{42, 1, "error code 42, subcode 1"},
	} {
		if got := describeNotification(tc.code, tc.subcode); got != tc.want {
			t.Errorf("%d/%d: %q, want %q", tc.code, tc.subcode, got, tc.want)
		}
	}
}

// timeoutErr is a dial timeout as net reports it.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestLastErrorFromLog(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	signals := 0
	s := &sessions{logger: logger, changed: func() { signals++ }, byAddr: map[netip.Addr]*session{}}
	addr := netip.MustParseAddr("172.31.249.1")
	s.add(addr, mustPeer(t, Peer{Name: "r1", Address: addr, ASN: 64512, LocalASN: 64513, Password: "x"}))
	obs := (&gobgpLogger{logger: logger, observe: s.observeLog}).Warn
	debug := (&gobgpLogger{logger: logger, observe: s.observeLog}).Debug
	lastError := func() string {
		sess, _ := s.get(addr)
		return sess.lastError
	}
	stateChange := func(from, to, reason string) {
		debug("state changed", gobgplog.Fields{"Key": addr.String(), "old": from, "new": to, "reason": stringer(reason)})
	}

	obs("received notification", gobgplog.Fields{"Key": "172.31.249.1", "Code": uint8(6), "Subcode": uint8(2), "Communicated-Reason": "maintenance", "Data": []byte{}})
	if got, want := lastError(), `received NOTIFICATION from the peer: Cease / Administrative Shutdown ("maintenance")`; got != want {
		t.Errorf("LastError %q, want %q", got, want)
	}
	obs("sent notification", gobgplog.Fields{"Key": "172.31.249.1", "Data": bgp.NewMessageError(2, 2, nil, "as number mismatch expected 64599, received 64512")})
	if got, want := lastError(), "sent NOTIFICATION to the peer: OPEN Message Error / Bad Peer AS: as number mismatch expected 64599, received 64512"; got != want {
		t.Errorf("LastError %q, want %q", got, want)
	}
	// GoBGP's vaguer reason for the same failure does not replace it...
	stateChange("BGP_FSM_OPENSENT", "BGP_FSM_IDLE", "invalid-msg")
	if !strings.Contains(lastError(), "Bad Peer AS") {
		t.Errorf("LastError %q replaced by the state change of the same attempt", lastError())
	}
	// ...but on a new connection, the unreported NOTIFICATION is explained.
	stateChange("BGP_FSM_ACTIVE", "BGP_FSM_OPENSENT", "new-connection")
	stateChange("BGP_FSM_OPENCONFIRM", "BGP_FSM_IDLE", "invalid-msg")
	if got := lastError(); !strings.Contains(got, "OPEN exchange") || !strings.Contains(got, "expects AS 64513") {
		t.Errorf("LastError %q, want the OPEN exchange explained", got)
	}
	stateChange("BGP_FSM_ACTIVE", "BGP_FSM_OPENSENT", "new-connection")
	stateChange("BGP_FSM_ESTABLISHED", "BGP_FSM_IDLE", "read-failed")
	if got := lastError(); got != "connection closed by the peer without a NOTIFICATION" {
		t.Errorf("LastError %q after a read failure", got)
	}
	obs("hold timer expired", gobgplog.Fields{"Key": "172.31.249.1", "State": "BGP_FSM_ESTABLISHED"})
	if got := lastError(); !strings.HasPrefix(got, "hold timer expired") {
		t.Errorf("LastError %q after the hold timer", got)
	}
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	debug("failed to connect", gobgplog.Fields{"Key": "172.31.249.1", "Error": dialErr})
	if got := lastError(); !strings.Contains(got, "cannot connect: dial tcp: i/o timeout") || !strings.Contains(got, "TCP MD5 password") {
		t.Errorf("LastError %q after a connect timeout with a password", got)
	}
	debug("failed to connect", gobgplog.Fields{"Key": "172.31.249.1", "Error": errors.New("connect: connection refused")})
	if got := lastError(); got != "cannot connect: connect: connection refused" {
		t.Errorf("LastError %q", got)
	}

	// Established clears it; other peers' and unknown lines are ignored.
	n := signals
	s.setState(addr, StateEstablished)
	if lastError() != "" || signals != n+1 {
		t.Errorf("after Established: LastError %q, %d signals", lastError(), signals-n)
	}
	s.setState(addr, StateEstablished)
	obs("received notification", gobgplog.Fields{"Key": "172.31.249.99", "Code": uint8(6), "Subcode": uint8(2)})
	obs("Add a peer configuration", gobgplog.Fields{"Key": "172.31.249.1"})
	obs("received notification", gobgplog.Fields{"Code": uint8(6)})
	if lastError() != "" || signals != n+1 {
		t.Errorf("unrelated lines changed LastError to %q or signalled (%d)", lastError(), signals-n)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestPeerEvent(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	signals := 0
	s := &sessions{logger: logger, changed: func() { signals++ }, byAddr: map[netip.Addr]*session{}}
	addr := netip.MustParseAddr("fd31:0:0:f90::1")
	s.add(addr, mustPeer(t, Peer{Name: "r6", Address: addr, ASN: 64512, LocalASN: 64513}))
	before, _ := s.get(addr)
	time.Sleep(time.Millisecond)
	event := func(a string, st api.PeerState_SessionState) *api.WatchEventResponse {
		return &api.WatchEventResponse{Event: &api.WatchEventResponse_Peer{Peer: &api.WatchEventResponse_PeerEvent{
			Type: api.WatchEventResponse_PeerEvent_STATE,
			Peer: &api.Peer{State: &api.PeerState{NeighborAddress: a, SessionState: st}},
		}}}
	}
	s.peerEvent(event("fd31:0:0:f90:0:0:0:1", api.PeerState_ESTABLISHED))
	after, _ := s.get(addr)
	if after.state != StateEstablished || !after.since.After(before.since) || signals != 1 {
		t.Errorf("after the event: %+v, %d signals", after, signals)
	}
	s.peerEvent(event("fd31:0:0:f90::1", api.PeerState_ESTABLISHED)) // no change
	s.peerEvent(event("172.31.249.9", api.PeerState_ACTIVE))         // not ours
	s.peerEvent(&api.WatchEventResponse{})
	if again, _ := s.get(addr); again.since != after.since || signals != 1 {
		t.Errorf("repeated or foreign events changed the session: %+v, %d signals", again, signals)
	}

	// GoBGP's listing wins over a missed event, not over a newer one.
	seen := s.snapshot()
	s.setState(addr, StateIdle) // an event while GoBGP was being asked
	s.reconcile(addr, StateEstablished, seen[addr])
	if st, _ := s.get(addr); st.state != StateIdle {
		t.Errorf("an older listing replaced a newer event: %s", st.state)
	}
	seen = s.snapshot()
	s.reconcile(addr, StateActive, seen[addr])
	if st, _ := s.get(addr); st.state != StateActive || signals != 3 {
		t.Errorf("listing not applied: %s, %d signals", st.state, signals)
	}
}

func TestFieldsToKV(t *testing.T) {
	var nilReason *nilStringer
	kv := fieldsToKV(gobgplog.Fields{"Topic": "Peer", "Key": "172.31.249.1", "reason": nilReason, "b": 1})
	want := []any{"peerAddress", "172.31.249.1", "Topic", "Peer", "b", 1, "reason", "<nil>"} // GoBGP's key order
	if !slices.Equal(kv, want) {
		t.Errorf("%v, want %v", kv, want)
	}
}

type nilStringer struct{ s string }

func (n *nilStringer) String() string { return n.s }

func TestNewValidatesConfig(t *testing.T) {
	logger, ctx := ktesting.NewTestContext(t)
	for _, tc := range []struct {
		cfg Config
		err string
	}{
		{Config{Logger: logger}, "router ID"},
		{Config{RouterID: netip.MustParseAddr("fd31:0:0:f90::2"), Logger: logger}, "not a non-zero IPv4 address"},
		{Config{RouterID: netip.MustParseAddr("172.31.249.2"), ListenPort: 70000, Logger: logger}, "listen port 70000"},
	} {
		if _, err := New(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want one containing %q", tc.cfg, err, tc.err)
		}
	}
}

// TestManagerWithoutPeers runs a GoBGP server that neither listens nor has
// peers, so it opens no socket: routes for peers that do not exist yet are
// kept, and the Manager refuses work after Shutdown.
func TestManagerWithoutPeers(t *testing.T) {
	logger, ctx := ktesting.NewTestContext(t)
	m, err := New(ctx, Config{RouterID: netip.MustParseAddr("172.31.249.2"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	r := Route{Prefix: netip.MustParsePrefix("172.31.249.101/32"), NextHop: netip.MustParseAddr("172.31.249.2"), Peers: []string{"later"}}
	bad := Route{Prefix: netip.MustParsePrefix("172.31.249.102/32"), NextHop: netip.MustParseAddr("fd31:0:0:f90::2")}
	err = m.SetRoutes(ctx, []Route{r, bad, r})
	if err == nil || !strings.Contains(err.Error(), "172.31.249.102/32: next hop") || !strings.Contains(err.Error(), "172.31.249.101/32: given twice") {
		t.Errorf("SetRoutes error %v, want the bad and the repeated route named", err)
	}
	if _, ok := m.routes[r.Prefix]; !ok || len(m.routes) != 1 {
		t.Errorf("desired routes %v, want %s kept for its future peer", m.routes, r.Prefix)
	}
	if st := m.Status(ctx); len(st) != 0 {
		t.Errorf("Status without peers: %v", st)
	}
	done := make(chan struct{})
	go func() {
		m.Shutdown(ctx)
		m.Shutdown(ctx) // twice is harmless
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return within 15s")
	}
	if err := m.SetPeers(context.Background(), nil); !errors.Is(err, errShutdown) {
		t.Errorf("SetPeers after Shutdown: %v", err)
	}
	if err := m.SetRoutes(context.Background(), nil); !errors.Is(err, errShutdown) {
		t.Errorf("SetRoutes after Shutdown: %v", err)
	}
}
