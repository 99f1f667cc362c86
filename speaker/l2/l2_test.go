package l2

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"k8s.io/klog/v2/ktesting"
)

var (
	ourMAC    = net.HardwareAddr{0x02, 0x31, 0xf8, 0, 0, 0x01}
	theirMAC  = net.HardwareAddr{0x02, 0x31, 0xf8, 0, 0, 0x02}
	vip6      = netip.MustParseAddr("fd31:0:0:f80::10")
	client6   = netip.MustParseAddr("fd31:0:0:f80::2")
	vip6Group = netip.MustParseAddr("ff02::1:ff00:10")
)

// ipv6Packet builds an IPv6 packet without extension headers.
func ipv6Packet(src, dst netip.Addr, hopLimit, nextHeader int, payload []byte) []byte {
	b := make([]byte, ipv6.HeaderLen, ipv6.HeaderLen+len(payload))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:6], uint16(len(payload)))
	b[6], b[7] = byte(nextHeader), byte(hopLimit)
	copy(b[8:24], src.AsSlice())
	copy(b[24:40], dst.AsSlice())
	return append(b, payload...)
}

func ethernetFrame(t *testing.T, src, dst net.HardwareAddr, et ethernet.EtherType, payload []byte) []byte {
	t.Helper()
	b, err := (&ethernet.Frame{Source: src, Destination: dst, EtherType: et, Payload: payload}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ndpFrame is an NDP message in a valid frame, checksum included.
func ndpFrame(t *testing.T, m ndp.Message, src, dst netip.Addr) []byte {
	t.Helper()
	msg, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return ethernetFrame(t, theirMAC, ourMAC, ethernet.EtherTypeIPv6, ipv6Packet(src, dst, ndp.HopLimit, protocolICMPv6, msg))
}

func solicitationFor(target netip.Addr, opts ...ndp.Option) *ndp.NeighborSolicitation {
	return &ndp.NeighborSolicitation{TargetAddress: target, Options: opts}
}

var sourceLLA = &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: theirMAC}

func TestNeighborFilter(t *testing.T) {
	vm, err := bpf.NewVM(neighborFilter())
	if err != nil {
		t.Fatal(err)
	}
	echo, err := (&icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 1, Seq: 1}}).
		Marshal(icmp.IPv6PseudoHeader(client6.AsSlice(), vip6.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := ndp.MarshalMessage(solicitationFor(vip6, sourceLLA))
	if err != nil {
		t.Fatal(err)
	}
	// A hop-by-hop options header (8 bytes of padding) in front of the solicitation.
	hopByHop := append([]byte{protocolICMPv6, 0, 1, 4, 0, 0, 0, 0}, ns...)
	arpRequest, err := arp.NewPacket(arp.OperationRequest, theirMAC, netip.MustParseAddr("172.31.248.2"), ethernet.Broadcast, netip.MustParseAddr("172.31.248.10"))
	if err != nil {
		t.Fatal(err)
	}
	arpBytes, err := arpRequest.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		frame  []byte
		accept bool
	}{
		{"multicast solicitation", ndpFrame(t, solicitationFor(vip6, sourceLLA), client6, vip6Group), true},
		{"unicast solicitation", ndpFrame(t, solicitationFor(vip6, sourceLLA), client6, vip6), true},
		{"advertisement", ndpFrame(t, unsolicitedAdvertisement(vip6, theirMAC), client6, netip.IPv6LinkLocalAllNodes()), true},
		{"router solicitation", ndpFrame(t, &ndp.RouterSolicitation{}, client6, netip.MustParseAddr("ff02::2")), false},
		{"echo request", ethernetFrame(t, theirMAC, ourMAC, ethernet.EtherTypeIPv6, ipv6Packet(client6, vip6, 64, protocolICMPv6, echo)), false},
		{"extension header", ethernetFrame(t, theirMAC, ourMAC, ethernet.EtherTypeIPv6, ipv6Packet(client6, vip6, 255, 0, hopByHop)), false},
		{"ARP", ethernetFrame(t, theirMAC, ethernet.Broadcast, ethernet.EtherTypeARP, arpBytes), false},
		{"runt", []byte{0x33, 0x33}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := vm.Run(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if accepted := n > 0; accepted != tc.accept {
				t.Errorf("filter kept %d bytes; want accepted=%v", n, tc.accept)
			}
			if tc.accept && n < len(tc.frame) {
				t.Errorf("filter cut an accepted frame to %d of %d bytes", n, len(tc.frame))
			}
		})
	}
}

func TestParseSolicitation(t *testing.T) {
	valid := ndpFrame(t, solicitationFor(vip6, sourceLLA), client6, vip6Group)
	s, err := parseSolicitation(valid)
	if err != nil {
		t.Fatalf("valid solicitation: %v", err)
	}
	want := solicitation{srcMAC: theirMAC, dstMAC: ourMAC, src: client6, dst: vip6Group, target: vip6}
	if !slices.Equal(s.srcMAC, want.srcMAC) || !slices.Equal(s.dstMAC, want.dstMAC) ||
		s.src != want.src || s.dst != want.dst || s.target != want.target {
		t.Errorf("parsed %+v, want %+v", *s, want)
	}

	// Ethernet pads short frames; the IPv6 payload length says where the message ends.
	if _, err := parseSolicitation(append(slices.Clone(valid), 0, 0, 0, 0)); err != nil {
		t.Errorf("padded frame: %v", err)
	}
	if _, err := parseSolicitation(ndpFrame(t, solicitationFor(vip6), netip.IPv6Unspecified(), vip6Group)); err != nil {
		t.Errorf("DAD solicitation: %v", err)
	}
	if _, err := parseSolicitation(ndpFrame(t, solicitationFor(vip6, sourceLLA), client6, vip6)); err != nil {
		t.Errorf("unicast solicitation: %v", err)
	}

	tamper := func(f func(b []byte)) []byte {
		b := slices.Clone(valid)
		f(b)
		return b
	}
	const hopLimitAt, codeAt, checksumAt = ethernetHeaderLen + 7, ethernetHeaderLen + ipv6.HeaderLen + 1, ethernetHeaderLen + ipv6.HeaderLen + 2
	for _, tc := range []struct {
		name  string
		frame []byte
		err   string
	}{
		{"hop limit", tamper(func(b []byte) { b[hopLimitAt] = 64 }), "hop limit 64"},
		{"checksum", tamper(func(b []byte) { b[checksumAt] ^= 0xff }), "checksum"},
		{"code", tamper(func(b []byte) { b[codeAt] = 1 }), "checksum"}, // the checksum covers the code
		{"truncated", valid[:len(valid)-4], "truncated"},
		{"advertisement", ndpFrame(t, unsolicitedAdvertisement(vip6, theirMAC), client6, netip.IPv6LinkLocalAllNodes()), "not a neighbor solicitation"},
		{"multicast target", ndpFrame(t, solicitationFor(netip.MustParseAddr("ff02::1")), client6, vip6Group), "multicast target"},
		{"DAD not to solicited-node group", ndpFrame(t, solicitationFor(vip6), netip.IPv6Unspecified(), vip6), "DAD solicitation"},
		{"DAD with source link-layer address", ndpFrame(t, solicitationFor(vip6, sourceLLA), netip.IPv6Unspecified(), vip6Group), "source link-layer address"},
		{"VLAN-tagged", tamper(func(b []byte) { binary.BigEndian.PutUint16(b[12:14], uint16(ethernet.EtherTypeVLAN)) }), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSolicitation(tc.frame)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}

	// A code other than 0 with a matching checksum.
	msg, err := ndp.MarshalMessage(solicitationFor(vip6, sourceLLA))
	if err != nil {
		t.Fatal(err)
	}
	m, err := icmp.ParseMessage(protocolICMPv6, msg)
	if err != nil {
		t.Fatal(err)
	}
	m.Code = 1
	msg, err = m.Marshal(icmp.IPv6PseudoHeader(client6.AsSlice(), vip6Group.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	frame := ethernetFrame(t, theirMAC, ourMAC, ethernet.EtherTypeIPv6, ipv6Packet(client6, vip6Group, 255, protocolICMPv6, msg))
	if _, err := parseSolicitation(frame); err == nil || !strings.Contains(err.Error(), "code 1") {
		t.Errorf("code 1: error %v, want one about the code", err)
	}
}

// sent is an advertisement frame as a receiver sees it.
type sent struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	hopLimit       int
	na             *ndp.NeighborAdvertisement
}

// parseAdvertisement parses and checks (checksum included) the frame of a.
func parseAdvertisement(t *testing.T, a advertisement) sent {
	t.Helper()
	b, err := a.frame(ourMAC)
	if err != nil {
		t.Fatal(err)
	}
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if f.EtherType != ethernet.EtherTypeIPv6 {
		t.Fatalf("EtherType %v, want IPv6", f.EtherType)
	}
	h, err := ipv6.ParseHeader(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 6 || h.NextHeader != protocolICMPv6 || h.PayloadLen != len(f.Payload)-ipv6.HeaderLen {
		t.Fatalf("IPv6 header %v: want version 6, ICMPv6, payload length %d", h, len(f.Payload)-ipv6.HeaderLen)
	}
	src, _ := netip.AddrFromSlice(h.Src)
	dst, _ := netip.AddrFromSlice(h.Dst)
	msg := f.Payload[ipv6.HeaderLen:]
	if err := checkICMPv6Checksum(msg, src, dst); err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("sent %T, want a neighbor advertisement", m)
	}
	return sent{srcMAC: f.Source, dstMAC: f.Destination, src: src, dst: dst, hopLimit: h.HopLimit, na: na}
}

// checkAdvertisement checks what every advertisement of vip6 must be.
func checkAdvertisement(t *testing.T, s sent, solicited bool) {
	t.Helper()
	if !slices.Equal(s.srcMAC, ourMAC) || s.src != vip6 || s.hopLimit != ndp.HopLimit {
		t.Errorf("sent from %s at %s with hop limit %d, want from %s at %s with hop limit 255", s.src, s.srcMAC, s.hopLimit, vip6, ourMAC)
	}
	na := s.na
	if na.Router || na.Solicited != solicited || !na.Override || na.TargetAddress != vip6 {
		t.Errorf("advertisement %+v: want Router=false Solicited=%v Override=true TargetAddress=%s", na, solicited, vip6)
	}
	if len(na.Options) != 1 {
		t.Fatalf("options %v: want only the target link-layer address", na.Options)
	}
	lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
	if !ok || lla.Direction != ndp.Target || !slices.Equal(lla.Addr, ourMAC) {
		t.Errorf("option %+v: want target link-layer address %s", na.Options[0], ourMAC)
	}
}

func TestAdvertisements(t *testing.T) {
	allNodesMAC := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}

	s := parseAdvertisement(t, answer(&solicitation{srcMAC: theirMAC, dstMAC: ourMAC, src: client6, dst: vip6Group, target: vip6}, ourMAC))
	if s.dst != client6 || !slices.Equal(s.dstMAC, theirMAC) {
		t.Errorf("answer to a solicitation goes to %s at %s, want its source %s at %s", s.dst, s.dstMAC, client6, theirMAC)
	}
	checkAdvertisement(t, s, true)

	s = parseAdvertisement(t, answer(&solicitation{srcMAC: theirMAC, dstMAC: multicastMAC(vip6Group), src: netip.IPv6Unspecified(), dst: vip6Group, target: vip6}, ourMAC))
	if s.dst != netip.MustParseAddr("ff02::1") || !slices.Equal(s.dstMAC, allNodesMAC) {
		t.Errorf("answer to DAD goes to %s at %s, want ff02::1 at %s", s.dst, s.dstMAC, allNodesMAC)
	}
	checkAdvertisement(t, s, false)

	s = parseAdvertisement(t, announcement(vip6, ourMAC))
	if s.dst != netip.MustParseAddr("ff02::1") || !slices.Equal(s.dstMAC, allNodesMAC) {
		t.Errorf("announcement goes to %s at %s, want ff02::1 at %s", s.dst, s.dstMAC, allNodesMAC)
	}
	checkAdvertisement(t, s, false)

	if got, want := multicastMAC(vip6Group), (net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x10}); !slices.Equal(got, want) {
		t.Errorf("multicastMAC(%s) = %s, want %s", vip6Group, got, want)
	}
}

func TestGratuitousARP(t *testing.T) {
	vip := netip.MustParseAddr("172.31.248.10")
	p, err := gratuitousARP(vip, ourMAC)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got arp.Packet
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Operation != arp.OperationRequest || got.SenderIP != vip || got.TargetIP != vip ||
		!slices.Equal(got.SenderHardwareAddr, ourMAC) || !slices.Equal(got.TargetHardwareAddr, make(net.HardwareAddr, 6)) {
		t.Errorf("gratuitous ARP %+v: want a request from %s at %s for itself, target MAC zero", got, vip, ourMAC)
	}
	if _, err := gratuitousARP(vip6, ourMAC); err == nil || !strings.Contains(err.Error(), vip6.String()) {
		t.Errorf("gratuitous ARP for an IPv6 address: error %v, want one naming it", err)
	}
}

func addrSet(addrs ...string) map[netip.Addr]struct{} {
	set := map[netip.Addr]struct{}{}
	for _, a := range addrs {
		set[netip.MustParseAddr(a)] = struct{}{}
	}
	return set
}

func TestSolicitedNodeGroups(t *testing.T) {
	// Both map to ff02::1:ff00:10; the IPv4 address to none.
	groups := solicitedNodeGroups(addrSet("fd31:0:0:f80::10", "fd31:0:0:f81::10", "fd31:0:0:f80::1:2345", "172.31.248.10"))
	if want := addrSet("ff02::1:ff00:10", "ff02::1:ff01:2345"); !mapsEqual(groups, want) {
		t.Errorf("groups %v, want %v", groups, want)
	}

	// Step through address sets as SetAddresses would, applying the changes.
	joined := map[netip.Addr]struct{}{}
	for _, step := range []struct {
		addrs       []string
		join, leave []string
	}{
		{addrs: []string{"fd31:0:0:f80::10", "fd31:0:0:f81::10"}, join: []string{"ff02::1:ff00:10"}},
		{addrs: []string{"fd31:0:0:f81::10", "fd31:0:0:f80::20"}, join: []string{"ff02::1:ff00:20"}}, // ::10 still needs its group
		{addrs: []string{"fd31:0:0:f80::20", "172.31.248.10"}, leave: []string{"ff02::1:ff00:10"}},
		{addrs: nil, leave: []string{"ff02::1:ff00:20"}},
	} {
		join, leave := groupChanges(joined, solicitedNodeGroups(addrSet(step.addrs...)))
		if !slices.Equal(join, parseAddrs(step.join)) || !slices.Equal(leave, parseAddrs(step.leave)) {
			t.Errorf("to %v: join %v leave %v, want join %v leave %v", step.addrs, join, leave, step.join, step.leave)
		}
		for _, g := range join {
			joined[g] = struct{}{}
		}
		for _, g := range leave {
			delete(joined, g)
		}
	}
}

func parseAddrs(ss []string) []netip.Addr {
	var addrs []netip.Addr
	for _, s := range ss {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	return addrs
}

func mapsEqual(a, b map[netip.Addr]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func TestForUs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst net.HardwareAddr
		want     bool
	}{
		{"to our MAC", theirMAC, ourMAC, true},
		{"to a solicited-node group", theirMAC, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x10}, true},
		{"broadcast", theirMAC, ethernet.Broadcast, true},
		{"sent by us", ourMAC, ethernet.Broadcast, false},
		{"to another host", theirMAC, net.HardwareAddr{0x02, 0x31, 0xf8, 0, 0, 0x03}, false},
	} {
		if got := forUs(tc.src, tc.dst, ourMAC); got != tc.want {
			t.Errorf("%s: forUs = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// announcements counts, by address, the announcements (or the probes) of a
// Responder without sockets.
type announcements struct {
	mu     sync.Mutex
	counts map[netip.Addr]int
}

func (a *announcements) record(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[addr]++
}

func (a *announcements) count(addr netip.Addr) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[addr]
}

// waitFor polls cond every 5ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

// waitAnnouncers waits, bounded, until no announcement schedule is running.
func waitAnnouncers(t *testing.T, r *Responder) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		r.announcers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("announcement schedules still running 5s after they should have stopped")
	}
}

func TestSetAddressesAnnounces(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	schedule := []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond}
	r := newResponder(&net.Interface{Name: "test0", HardwareAddr: ourMAC}, logger, config{schedule: schedule})
	rec := &announcements{counts: map[netip.Addr]int{}}
	r.announce = rec.record
	a, b := netip.MustParseAddr("172.31.248.10"), vip6

	r.SetAddresses([]netip.Addr{a, b, a})
	if !r.owns(a) || !r.owns(b) {
		t.Fatal("addresses not answered for right after SetAddresses")
	}
	waitAnnouncers(t, r)
	if rec.count(a) != len(schedule) || rec.count(b) != len(schedule) {
		t.Fatalf("announced %s %d times and %s %d times, want %d each", a, rec.count(a), b, rec.count(b), len(schedule))
	}

	// Addresses already in the set are not announced again.
	r.SetAddresses([]netip.Addr{b, a})
	waitAnnouncers(t, r)
	if rec.count(a) != len(schedule) || rec.count(b) != len(schedule) {
		t.Fatalf("addresses already in the set were announced again: %v", rec.counts)
	}

	// Removing an address stops answering and its repeats at once.
	r.schedule = []time.Duration{0, time.Hour}
	c := netip.MustParseAddr("fd31:0:0:f80::20")
	r.SetAddresses([]netip.Addr{a, c})
	waitFor(t, 5*time.Second, "first announcement", func() bool { return rec.count(c) == 1 })
	r.SetAddresses([]netip.Addr{a})
	if r.owns(c) || r.owns(b) {
		t.Fatal("removed addresses still answered for")
	}
	waitAnnouncers(t, r)

	// Coming back is news again.
	r.SetAddresses([]netip.Addr{a, c})
	waitFor(t, 5*time.Second, "announcement after re-adding", func() bool { return rec.count(c) == 2 })

	// Close stops the schedule that waits an hour; later updates are ignored.
	closed := make(chan error)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s")
	}
	r.SetAddresses([]netip.Addr{b})
	if r.owns(b) {
		t.Error("SetAddresses after Close took effect")
	}
}

func TestSetAddressesConcurrent(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	r := newResponder(&net.Interface{Name: "test0", HardwareAddr: ourMAC}, logger, config{schedule: []time.Duration{0, time.Millisecond}})
	rec := &announcements{counts: map[netip.Addr]int{}}
	r.announce = rec.record
	sets := [][]netip.Addr{
		{vip6},
		{vip6, netip.MustParseAddr("172.31.248.10")},
		{netip.MustParseAddr("fd31:0:0:f80::20")},
		nil,
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				r.SetAddresses(sets[(g+i)%len(sets)])
				r.owns(vip6)
			}
		})
	}
	wg.Wait()
	r.SetAddresses(sets[1])
	if !r.owns(vip6) || r.owns(netip.MustParseAddr("fd31:0:0:f80::20")) {
		t.Errorf("after the last SetAddresses the set is %v, want %v", r.owned, sets[1])
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNormalize(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	r := newResponder(&net.Interface{Name: "test0", HardwareAddr: ourMAC}, logger, config{})
	got := r.normalize([]netip.Addr{
		netip.MustParseAddr("::ffff:172.31.248.10"),
		netip.MustParseAddr("fe80::10%test0"),
		{},
		netip.IPv4Unspecified(),
		netip.MustParseAddr("ff02::1"),
	})
	if want := addrSet("172.31.248.10", "fe80::10"); !mapsEqual(got, want) {
		t.Errorf("normalized to %v, want %v", got, want)
	}
}

func TestNewMissingInterface(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	_, err := New("ilbt-missing0", logger)
	if err == nil || !strings.Contains(err.Error(), "interface ilbt-missing0 not found") {
		t.Fatalf("New on a missing interface: error %v, want one saying it is not found", err)
	}
}

func TestRegisterMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMetrics(reg); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	// The counters are global: a fresh interface label keeps -count=N runs apart.
	iface := fmt.Sprintf("test%d", time.Now().UnixNano())
	c := newCounters(protocolNDP, iface)
	c.requests.Inc()
	c.replies.Inc()
	c.gratuitous.Add(2)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["interface"] == iface && labels["protocol"] == "ndp" {
				got[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"ironlb_speaker_l2_requests_total":   1,
		"ironlb_speaker_l2_replies_total":    1,
		"ironlb_speaker_l2_gratuitous_total": 2,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v (gathered %v)", name, got[name], v, got)
		}
	}

	// A different collector under the same name is a real conflict.
	other := prometheus.NewRegistry()
	if err := other.Register(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ironlb_speaker_l2_requests_total", Help: "x"}, []string{"protocol", "interface"})); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMetrics(other); err == nil {
		t.Error("RegisterMetrics over a different collector of the same name: no error")
	}
}

// A shut gate stops every reply and announcement, whatever the set says;
// open again, the same set is answered.
func TestGateShutAnswersNothing(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	var open atomic.Bool
	schedule := []time.Duration{0, 10 * time.Millisecond}
	r := newResponder(&net.Interface{Name: "test0", HardwareAddr: ourMAC}, logger, config{schedule: schedule, gate: open.Load})
	rec := &announcements{counts: map[netip.Addr]int{}}
	r.announce = rec.record
	a := netip.MustParseAddr("172.31.248.10")
	r.SetAddresses([]netip.Addr{a, vip6})
	waitAnnouncers(t, r)
	if r.owns(a) || r.owns(vip6) || rec.count(a) != 0 || rec.count(vip6) != 0 {
		t.Fatalf("gate shut: answers %v/%v, announced %v", r.owns(a), r.owns(vip6), rec.counts)
	}
	open.Store(true)
	if !r.owns(a) || !r.owns(vip6) {
		t.Fatal("gate open: the set is not answered")
	}
}
