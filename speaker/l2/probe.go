package l2

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// Looking before taking. An address new to the set is not answered at once:
// the Responder first asks the link who answers it, as RFC 5227 (IPv4
// Address Conflict Detection) and Duplicate Address Detection (IPv6) do,
// with an ARP probe (sender IP 0.0.0.0) or a Neighbor Solicitation from the
// unspecified address. While another host answers, the Responder waits and
// looks again; it answers once a whole look goes unanswered.
//
// This is what keeps two nodes from answering one address when the speakers'
// views of who owns it differ for a moment (one has seen a node die or a
// record change that another has not): the node that takes an address waits
// until the node that answered it stops, whatever either of them believes.
// A dead owner does not answer, so a failover costs one look.
//
// A host that keeps answering after MaxWait (a host on the LAN that has the
// address configured, or forges answers) does not keep the address dark: the
// Responder answers anyway and reports the conflict (WithConflict).
//
// Two nodes that take one address at the same moment see each other's
// probes; the one with the higher MAC yields, so exactly one answers.

// Probing is how an address new to the set is looked at before it is answered.
type Probing struct {
	// Window is one look: probes at its start and halfway, answers counted
	// until its end. Zero: answer at once, without looking.
	Window time.Duration
	// MaxWait bounds the wait while another host answers.
	MaxWait time.Duration
}

// DefaultProbing is the look of New: 150 ms, at most 10 s of waiting.
var DefaultProbing = Probing{Window: 150 * time.Millisecond, MaxWait: 10 * time.Second}

// WithProbing sets how an address new to the set is looked at before it is
// answered (DefaultProbing unless set).
func WithProbing(p Probing) Option {
	return func(c *config) { c.probing = p }
}

// WithConflict has report called when the Responder answers addr although
// the host at mac still answers it after MaxWait.
func WithConflict(report func(addr netip.Addr, mac net.HardwareAddr)) Option {
	return func(c *config) { c.conflict = report }
}

// claimKind is what a frame from another host says of an address.
type claimKind int

const (
	notAClaim claimKind = iota
	// claimAnswer: the host answers the address (a reply, an announcement).
	claimAnswer
	// claimProbe: the host looks before taking the address itself.
	claimProbe
)

// arpClaim reads an ARP packet from another host: a reply says its sender
// answers SenderIP; a request whose sender and target IP are the same is an
// announcement (gratuitous ARP); one from 0.0.0.0 is a probe for TargetIP.
// Ordinary requests claim nothing.
func arpClaim(p *arp.Packet) (netip.Addr, claimKind) {
	switch {
	case p.Operation == arp.OperationReply:
		return p.SenderIP, claimAnswer
	case p.Operation != arp.OperationRequest:
		return netip.Addr{}, notAClaim
	case p.SenderIP == p.TargetIP:
		return p.SenderIP, claimAnswer
	case p.SenderIP.IsUnspecified():
		return p.TargetIP, claimProbe
	}
	return netip.Addr{}, notAClaim
}

// yields reports whether this host, looking at an address, yields to
// another host's claim of it: always to an answer; to a probe only when the
// other host's MAC is lower, so that of two hosts that look at once exactly
// one yields.
func yields(kind claimKind, ours, theirs net.HardwareAddr) bool {
	switch kind {
	case claimAnswer:
		return true
	case claimProbe:
		return bytes.Compare(theirs, ours) < 0
	}
	return false
}

// lookOutcome is what one look at a pending address decides.
type lookOutcome int

const (
	lookAgain    lookOutcome = iota // another host answers: wait, look again
	answerNow                       // nobody else answers: answer
	answerAnyway                    // another host still answers after MaxWait
)

// afterLook decides, after a look in which another host claimed the address
// or not, having waited so long since the first look began.
func afterLook(claimed bool, waited, maxWait time.Duration) lookOutcome {
	switch {
	case !claimed:
		return answerNow
	case waited >= maxWait:
		return answerAnyway
	}
	return lookAgain
}

// look is an address being looked at before it is answered.
type look struct {
	cancel context.CancelFunc
	// claimedAt and mac: the latest claim of the address by another host
	// that this host yields to.
	claimedAt time.Time
	mac       net.HardwareAddr
	// waiting: a look was claimed, and the wait logged.
	waiting bool
}

// noteClaim records a claim of addr by the host at mac, if addr is being
// looked at and this host yields to it.
func (r *Responder) noteClaim(addr netip.Addr, kind claimKind, mac net.HardwareAddr) {
	if kind == notAClaim || !yields(kind, r.ifi.HardwareAddr, mac) {
		return
	}
	addr = addr.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.pending[addr]; l != nil {
		l.claimedAt, l.mac = time.Now(), mac
	}
}

// startLooking looks at addr until nobody else answers it, then answers it.
// Called with r.mu held.
func (r *Responder) startLooking(addr netip.Addr) *look {
	ctx, cancel := context.WithCancel(r.announceCtx)
	l := &look{cancel: cancel}
	r.announcers.Go(func() {
		start := time.Now()
		for round := start; ; round = time.Now() {
			r.probe(addr)
			if !sleepUntil(ctx, round.Add(r.probing.Window/2)) {
				return
			}
			r.probe(addr)
			if !sleepUntil(ctx, round.Add(r.probing.Window)) {
				return
			}
			if r.endLook(ctx, l, addr, round, time.Since(start)) {
				return
			}
		}
	})
	return l
}

// endLook applies the outcome of the look at addr that began at round, and
// reports whether looking is over.
func (r *Responder) endLook(ctx context.Context, l *look, addr netip.Addr, round time.Time, waited time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil || r.closed || r.pending[addr] != l {
		return true // left the set meanwhile
	}
	switch afterLook(!l.claimedAt.Before(round), waited, r.probing.MaxWait) {
	case lookAgain:
		if !l.waiting {
			l.waiting = true
			r.counters(addr).waited.Inc()
			r.logger.Info("Another host answers the address: answering it once that host stops", "address", addr, "mac", l.mac)
		}
		return false
	case answerAnyway:
		r.counters(addr).conflicts.Inc()
		r.logger.Info("Another host still answers the address: answering it too", "address", addr, "mac", l.mac, "waited", waited.Round(time.Millisecond))
		if r.conflict != nil {
			go r.conflict(addr, l.mac)
		}
	default:
		if l.waiting {
			r.logger.Info("The other host stopped answering the address", "address", addr, "waited", waited.Round(time.Millisecond))
		}
	}
	delete(r.pending, addr)
	r.owned[addr] = r.startAnnouncements(addr)
	r.logger.V(1).Info("Answering", "address", addr)
	return true
}

// sendProbe asks the link who answers addr.
func (r *Responder) sendProbe(addr netip.Addr) {
	var err error
	if addr.Is4() {
		if r.arp == nil {
			return
		}
		var p *arp.Packet
		p, err = arp.NewPacket(arp.OperationRequest, r.ifi.HardwareAddr, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), addr)
		if err == nil {
			err = r.arp.WriteTo(p, ethernet.Broadcast)
		}
	} else {
		if r.ndpFrames == nil {
			return
		}
		var frame []byte
		frame, err = dadSolicitation(addr, r.ifi.HardwareAddr)
		if err == nil {
			group, _ := ndp.SolicitedNodeMulticast(addr)
			_, err = r.ndpFrames.WriteTo(frame, &packet.Addr{HardwareAddr: multicastMAC(group)})
		}
	}
	if err != nil && !r.isClosed() {
		r.logger.Error(err, "Sending a probe failed", "address", addr)
	}
}
