package l2

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"
)

func TestArpClaim(t *testing.T) {
	vip := netip.MustParseAddr("172.31.248.10")
	client := netip.MustParseAddr("172.31.248.2")
	zero := make(net.HardwareAddr, 6)
	for _, tc := range []struct {
		name     string
		op       arp.Operation
		sip, tip netip.Addr
		want     netip.Addr
		kind     claimKind
	}{
		{"reply", arp.OperationReply, vip, client, vip, claimAnswer},
		{"reply to a probe", arp.OperationReply, vip, netip.IPv4Unspecified(), vip, claimAnswer},
		{"announcement", arp.OperationRequest, vip, vip, vip, claimAnswer},
		{"probe", arp.OperationRequest, netip.IPv4Unspecified(), vip, vip, claimProbe},
		{"ordinary request", arp.OperationRequest, client, vip, netip.Addr{}, notAClaim},
	} {
		p, err := arp.NewPacket(tc.op, theirMAC, tc.sip, zero, tc.tip)
		if err != nil {
			t.Fatal(err)
		}
		if got, kind := arpClaim(p); got != tc.want || kind != tc.kind {
			t.Errorf("%s: arpClaim = %v, %v; want %v, %v", tc.name, got, kind, tc.want, tc.kind)
		}
	}
}

func TestYields(t *testing.T) {
	lower := net.HardwareAddr{0x02, 0x31, 0xf8, 0, 0, 0x00}
	for _, tc := range []struct {
		name   string
		kind   claimKind
		theirs net.HardwareAddr
		want   bool
	}{
		{"an answer from a higher MAC", claimAnswer, theirMAC, true},
		{"an answer from a lower MAC", claimAnswer, lower, true},
		{"a probe from a lower MAC", claimProbe, lower, true},
		{"a probe from a higher MAC", claimProbe, theirMAC, false},
		{"no claim", notAClaim, lower, false},
	} {
		if got := yields(tc.kind, ourMAC, tc.theirs); got != tc.want {
			t.Errorf("%s: yields = %v, want %v", tc.name, got, tc.want)
		}
		// Of two hosts that probe at once, exactly one yields.
		if tc.kind == claimProbe && yields(claimProbe, ourMAC, tc.theirs) == yields(claimProbe, tc.theirs, ourMAC) {
			t.Errorf("%s: both or neither of the two hosts yield", tc.name)
		}
	}
}

func TestAfterLook(t *testing.T) {
	for _, tc := range []struct {
		claimed bool
		waited  time.Duration
		want    lookOutcome
	}{
		{false, 0, answerNow},
		{false, time.Minute, answerNow},
		{true, time.Second, lookAgain},
		{true, 10 * time.Second, answerAnyway},
		{true, 11 * time.Second, answerAnyway},
	} {
		if got := afterLook(tc.claimed, tc.waited, 10*time.Second); got != tc.want {
			t.Errorf("afterLook(%v, %v) = %v, want %v", tc.claimed, tc.waited, got, tc.want)
		}
	}
}

func TestNeighborFrameClaims(t *testing.T) {
	dad, err := dadSolicitation(vip6, theirMAC)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  netip.Addr
		kind  claimKind
	}{
		{"DAD solicitation (a probe)", dad, vip6, claimProbe},
		{"unsolicited advertisement", ndpFrame(t, unsolicitedAdvertisement(vip6, theirMAC), vip6, netip.IPv6LinkLocalAllNodes()), vip6, claimAnswer},
		{"ordinary solicitation", ndpFrame(t, solicitationFor(vip6, sourceLLA), client6, vip6Group), netip.Addr{}, notAClaim},
	} {
		m, err := parseNeighborFrame(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, kind := m.claim(); got != tc.want || kind != tc.kind {
			t.Errorf("%s: claim = %v, %v; want %v, %v", tc.name, got, kind, tc.want, tc.kind)
		}
	}
	// The probe is what RFC 4862 asks: to the target's solicited-node group
	// at its multicast MAC.
	var f ethernet.Frame
	if err := f.UnmarshalBinary(dad); err != nil {
		t.Fatal(err)
	}
	if f.Destination.String() != multicastMAC(vip6Group).String() {
		t.Errorf("DAD solicitation to %s, want %s", f.Destination, multicastMAC(vip6Group))
	}
	s, err := parseSolicitation(dad)
	if err != nil || !s.src.IsUnspecified() || s.dst != vip6Group || s.target != vip6 {
		t.Errorf("DAD solicitation parsed as %+v (%v)", s, err)
	}
	// A solicited advertisement to a multicast group is invalid.
	na := unsolicitedAdvertisement(vip6, theirMAC)
	na.Solicited = true
	if _, err := parseNeighborFrame(ndpFrame(t, na, vip6, netip.IPv6LinkLocalAllNodes())); err == nil {
		t.Error("solicited advertisement to all nodes accepted")
	}
}

// claimer keeps claiming addr as the host at mac, every 5 ms, until stopped.
func claimer(r *Responder, addr netip.Addr, kind claimKind, mac net.HardwareAddr) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r.noteClaim(addr, kind, mac)
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// An address new to the set is answered after one look when nobody else
// answers it; while another host answers it, only once that host stops; and
// after the longest wait whatever that host does, which is reported.
func TestLookBeforeTaking(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	conflicts := make(chan netip.Addr, 4)
	iface := "probe" + time.Now().Format("150405.000000000")
	r := newResponder(&net.Interface{Name: iface, HardwareAddr: ourMAC}, logger, config{
		schedule: []time.Duration{0},
		probing:  Probing{Window: 40 * time.Millisecond, MaxWait: 600 * time.Millisecond},
		conflict: func(a netip.Addr, mac net.HardwareAddr) { conflicts <- a },
	})
	rec := &announcements{counts: map[netip.Addr]int{}}
	r.announce = rec.record
	sent := &announcements{counts: map[netip.Addr]int{}} // counts the probes
	r.probe = sent.record
	defer r.Close()
	free := netip.MustParseAddr("172.31.248.10")
	taken := netip.MustParseAddr("172.31.248.11")
	squatted := netip.MustParseAddr("172.31.248.12")
	lower := net.HardwareAddr{0x02, 0x31, 0xf8, 0, 0, 0x00}

	// Nobody answers free: answered after one look of two probes.
	r.SetAddresses([]netip.Addr{free})
	if r.owns(free) {
		t.Fatal("answered before looking")
	}
	waitFor(t, 2*time.Second, "free answered", func() bool { return r.owns(free) })
	if n := sent.count(free); n != 2 {
		t.Errorf("%d probes for free, want 2 (one look)", n)
	}
	waitFor(t, 2*time.Second, "free announced", func() bool { return rec.count(free) > 0 })

	// Another host answers taken (a node whose view lags): not answered
	// while it does, answered within a look once it stops.
	stopAnswer := r.pendingClaims(taken, claimAnswer, theirMAC)
	time.Sleep(300 * time.Millisecond)
	if r.owns(taken) || rec.count(taken) != 0 {
		t.Fatal("answered while another host answers")
	}
	if sent.count(taken) < 4 {
		t.Errorf("%d probes for taken in 300 ms, want it looked at again and again", sent.count(taken))
	}
	stopAnswer()
	waitFor(t, 2*time.Second, "taken answered once the other host stopped", func() bool { return r.owns(taken) })
	if got := testutil.ToFloat64(r.arpMetrics.waited); got != 1 {
		t.Errorf("takeovers waited = %v, want 1", got)
	}

	// Two hosts look at once: the one with the higher MAC (this one, here
	// against a lower one) yields; a probe from a higher MAC does not stop it.
	higher := netip.MustParseAddr("172.31.248.13")
	stopHigher := r.pendingClaims(higher, claimProbe, theirMAC)
	waitFor(t, 2*time.Second, "answered despite the probes of a higher MAC", func() bool { return r.owns(higher) })
	stopHigher()
	tie := netip.MustParseAddr("172.31.248.14")
	stopLower := r.pendingClaims(tie, claimProbe, lower)
	time.Sleep(200 * time.Millisecond)
	if r.owns(tie) {
		t.Error("answered although a lower MAC probes it")
	}
	stopLower()

	// Leaving the set while looked at: never answered.
	keep := []netip.Addr{free, taken, higher}
	r.SetAddresses(keep)
	time.Sleep(200 * time.Millisecond)
	if r.owns(tie) {
		t.Error("an address that left the set while looked at is answered")
	}

	// A host that never stops (a forger, or a host with the address
	// configured): answered after MaxWait, and reported.
	stopSquat := r.pendingClaims(squatted, claimAnswer, theirMAC)
	defer stopSquat()
	began := time.Now()
	waitFor(t, 5*time.Second, "squatted answered after the longest wait", func() bool { return r.owns(squatted) })
	if waited := time.Since(began); waited < 500*time.Millisecond {
		t.Errorf("squatted answered after %v, before the longest wait (600ms)", waited)
	}
	select {
	case a := <-conflicts:
		if a != squatted {
			t.Errorf("conflict reported for %s, want %s", a, squatted)
		}
	case <-time.After(2 * time.Second):
		t.Error("no conflict reported")
	}
	if got := testutil.ToFloat64(r.arpMetrics.conflicts); got != 1 {
		t.Errorf("conflicts = %v, want 1", got)
	}
}

// pendingClaims adds addr to the set and has the host at mac claim it
// from before the first look ends.
func (r *Responder) pendingClaims(addr netip.Addr, kind claimKind, mac net.HardwareAddr) (stop func()) {
	r.mu.RLock()
	set := []netip.Addr{addr}
	for a := range r.owned {
		set = append(set, a)
	}
	for a := range r.pending {
		set = append(set, a)
	}
	r.mu.RUnlock()
	r.SetAddresses(set)
	return claimer(r, addr, kind, mac)
}
