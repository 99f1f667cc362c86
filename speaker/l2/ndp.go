package l2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

const (
	// protocolICMPv6 is the IPv6 Next Header value of ICMPv6.
	protocolICMPv6 = 58
	// ethernetHeaderLen is an untagged Ethernet header: two MACs and the EtherType.
	ethernetHeaderLen = 14
	// acceptFrame is the filter's "keep" verdict: more bytes than any frame.
	acceptFrame = 1 << 18
)

// neighborFilter is the BPF program of the NDP packet socket: it passes
// Ethernet frames carrying IPv6 whose Next Header is ICMPv6 and whose ICMPv6
// type is Neighbor Solicitation (135) or Neighbor Advertisement (136, for
// the looks before taking, probe.go), and drops everything else in the
// kernel. Extension headers between the IPv6 header and ICMPv6 are not
// followed: such messages are dropped, and no common stack sends them.
func neighborFilter() []bpf.Instruction {
	const (
		etherTypeOffset  = 12
		nextHeaderOffset = ethernetHeaderLen + 6
		icmpTypeOffset   = ethernetHeaderLen + ipv6.HeaderLen
	)
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: etherTypeOffset, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ethernet.EtherTypeIPv6), SkipTrue: 6},
		bpf.LoadAbsolute{Off: nextHeaderOffset, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protocolICMPv6, SkipTrue: 4},
		bpf.LoadAbsolute{Off: icmpTypeOffset, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(ipv6.ICMPTypeNeighborSolicitation), SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv6.ICMPTypeNeighborAdvertisement), SkipTrue: 1},
		bpf.RetConstant{Val: acceptFrame},
		bpf.RetConstant{Val: 0},
	}
}

// openNDP opens the IPv6 sockets, unless IPv6 is disabled on the interface
// (it has no IPv6 address, not even a link-local one).
func (r *Responder) openNDP(addrs []net.Addr) error {
	if !hasAddr(addrs, netip.Addr.Is6) {
		r.logger.Info("Interface has no IPv6 address: IPv6 (NDP) answering unavailable")
		return nil
	}
	// Bound to the unspecified address, so that a link-local address still
	// in Duplicate Address Detection (just after boot) does not fail New.
	c, _, err := ndp.Listen(r.ifi, ndp.Unspecified)
	if err != nil {
		return fmt.Errorf("interface %s: opening NDP socket: %w", r.ifi.Name, err)
	}
	r.memberships = c
	// This socket only holds group memberships: block every ICMPv6 type so
	// that its receive queue does not fill with messages nobody reads.
	var block ipv6.ICMPFilter
	block.SetAll(true)
	if err := c.SetICMPFilter(&block); err != nil {
		return fmt.Errorf("interface %s: filtering NDP socket: %w", r.ifi.Name, err)
	}

	prog, err := bpf.Assemble(neighborFilter())
	if err != nil {
		return fmt.Errorf("interface %s: assembling neighbor filter: %w", r.ifi.Name, err)
	}
	p, err := packet.Listen(r.ifi, packet.Raw, int(ethernet.EtherTypeIPv6), &packet.Config{Filter: prog})
	if err != nil {
		return fmt.Errorf("interface %s: opening NDP packet socket: %w", r.ifi.Name, err)
	}
	r.tuneQueue(p, protocolNDP)
	r.ndpFrames = p
	r.ndpMetrics = newCounters(protocolNDP, r.ifi.Name)
	return nil
}

// serveNDP answers neighbor solicitations, and notes the claims of other
// hosts (probe.go), until the socket is closed or ctx ends.
func (r *Responder) serveNDP(ctx context.Context) {
	// Solicitations are small; a longer frame is cut short and then dropped
	// by parseSolicitation's length check.
	buf := make([]byte, max(r.ifi.MTU, 1500)+ethernetHeaderLen)
	var pause backoff
	for {
		n, _, err := r.ndpFrames.ReadFrom(buf)
		if err != nil {
			if r.isClosed() {
				return
			}
			r.logger.Error(err, "Reading neighbor solicitations failed; retrying")
			if !pause.wait(ctx) {
				return
			}
			continue
		}
		pause.reset()
		r.handleNeighborFrame(buf[:n])
	}
}

// handleNeighborFrame answers a solicitation for an owned address and notes
// what a frame from another host claims.
func (r *Responder) handleNeighborFrame(frame []byte) {
	m, err := parseNeighborFrame(frame)
	if err != nil {
		r.logger.V(5).Info("Ignoring invalid neighbor message", "err", err)
		return
	}
	if !forUs(m.srcMAC, m.dstMAC, r.ifi.HardwareAddr) {
		return
	}
	if addr, kind := m.claim(); kind != notAClaim {
		r.noteClaim(addr, kind, m.srcMAC)
	}
	if m.solicitation != nil {
		r.handleSolicitation(m.solicitation)
	}
}

// handleSolicitation answers a solicitation for an owned address.
func (r *Responder) handleSolicitation(s *solicitation) {
	if !r.owns(s.target) {
		return
	}
	r.ndpMetrics.requests.Inc()
	a := answer(s, r.ifi.HardwareAddr)
	if err := r.sendAdvertisement(a); err != nil {
		if !r.isClosed() {
			r.logger.Error(err, "Sending neighbor advertisement failed", "address", s.target, "to", a.dst)
		}
		return
	}
	r.ndpMetrics.replies.Inc()
	r.logger.V(4).Info("Answered neighbor solicitation", "address", s.target, "from", s.src, "to", s.dst, "mac", s.srcMAC)
}

// announceNDP sends an unsolicited neighbor advertisement for addr to all nodes.
func (r *Responder) announceNDP(addr netip.Addr) {
	if r.ndpFrames == nil {
		return
	}
	if err := r.sendAdvertisement(announcement(addr, r.ifi.HardwareAddr)); err != nil {
		if !r.isClosed() {
			r.logger.Error(err, "Sending unsolicited neighbor advertisement failed", "address", addr)
		}
		return
	}
	r.ndpMetrics.gratuitous.Inc()
	r.logger.V(4).Info("Sent unsolicited neighbor advertisement", "address", addr)
}

// sendAdvertisement writes a as an Ethernet frame on the packet socket.
func (r *Responder) sendAdvertisement(a advertisement) error {
	frame, err := a.frame(r.ifi.HardwareAddr)
	if err != nil {
		return err
	}
	_, err = r.ndpFrames.WriteTo(frame, &packet.Addr{HardwareAddr: a.dstMAC})
	return err
}

// A solicitation is a validated Neighbor Solicitation and its frame's addresses.
type solicitation struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr // of the IPv6 header
	target         netip.Addr
}

// A neighborFrame is a validated Neighbor Solicitation or Advertisement.
type neighborFrame struct {
	srcMAC, dstMAC net.HardwareAddr
	solicitation   *solicitation              // nil for an advertisement
	advertisement  *ndp.NeighborAdvertisement // nil for a solicitation
}

// claim is what the frame says of an address (probe.go): an advertisement
// answers its target; a solicitation from the unspecified address (Duplicate
// Address Detection) is a probe for its target.
func (m *neighborFrame) claim() (netip.Addr, claimKind) {
	switch {
	case m.advertisement != nil:
		return m.advertisement.TargetAddress, claimAnswer
	case m.solicitation.src.IsUnspecified():
		return m.solicitation.target, claimProbe
	}
	return netip.Addr{}, notAClaim
}

// parseSolicitation parses an Ethernet frame that passed neighborFilter as
// a Neighbor Solicitation (parseNeighborFrame).
func parseSolicitation(frame []byte) (*solicitation, error) {
	m, err := parseNeighborFrame(frame)
	if err != nil {
		return nil, err
	}
	if m.solicitation == nil {
		return nil, fmt.Errorf("%T, not a neighbor solicitation", m.advertisement)
	}
	return m.solicitation, nil
}

// parseNeighborFrame parses an Ethernet frame that passed neighborFilter
// and validates it as RFC 4861 sections 7.1.1 and 7.1.2 ask. The kernel does
// these checks for ICMPv6 sockets; a packet socket gets the frame unchecked.
func parseNeighborFrame(frame []byte) (*neighborFrame, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil {
		return nil, fmt.Errorf("ethernet header: %w", err)
	}
	if f.EtherType != ethernet.EtherTypeIPv6 {
		return nil, fmt.Errorf("EtherType %v, not IPv6 (VLAN-tagged?)", f.EtherType)
	}
	h, err := ipv6.ParseHeader(f.Payload)
	if err != nil {
		return nil, fmt.Errorf("IPv6 header: %w", err)
	}
	if h.NextHeader != protocolICMPv6 {
		return nil, fmt.Errorf("next header %d, not ICMPv6", h.NextHeader)
	}
	if h.HopLimit != ndp.HopLimit {
		return nil, fmt.Errorf("hop limit %d, not %d: sent from off-link", h.HopLimit, ndp.HopLimit)
	}
	end := ipv6.HeaderLen + h.PayloadLen
	if end > len(f.Payload) {
		return nil, fmt.Errorf("truncated: payload length %d, got %d bytes", h.PayloadLen, len(f.Payload)-ipv6.HeaderLen)
	}
	msg := f.Payload[ipv6.HeaderLen:end] // without Ethernet padding
	src, _ := netip.AddrFromSlice(h.Src)
	dst, _ := netip.AddrFromSlice(h.Dst)
	if err := checkICMPv6Checksum(msg, src, dst); err != nil {
		return nil, err
	}
	if code := msg[1]; code != 0 {
		return nil, fmt.Errorf("ICMPv6 code %d, not 0", code)
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return nil, err
	}
	out := &neighborFrame{srcMAC: f.Source, dstMAC: f.Destination}
	switch msg := m.(type) {
	case *ndp.NeighborSolicitation:
		if msg.TargetAddress.IsMulticast() {
			return nil, fmt.Errorf("multicast target %s", msg.TargetAddress)
		}
		if src.IsUnspecified() {
			if err := checkDAD(msg, dst); err != nil {
				return nil, err
			}
		}
		out.solicitation = &solicitation{srcMAC: f.Source, dstMAC: f.Destination, src: src, dst: dst, target: msg.TargetAddress}
	case *ndp.NeighborAdvertisement:
		if msg.TargetAddress.IsMulticast() {
			return nil, fmt.Errorf("multicast target %s", msg.TargetAddress)
		}
		if msg.Solicited && dst.IsMulticast() {
			return nil, fmt.Errorf("solicited advertisement for %s sent to multicast %s", msg.TargetAddress, dst)
		}
		out.advertisement = msg
	default:
		return nil, fmt.Errorf("%T, not a neighbor solicitation or advertisement", m)
	}
	return out, nil
}

// checkICMPv6Checksum verifies the checksum of an ICMPv6 message by having
// x/net/icmp compute it afresh over the pseudo-header and comparing.
func checkICMPv6Checksum(msg []byte, src, dst netip.Addr) error {
	m, err := icmp.ParseMessage(protocolICMPv6, msg)
	if err != nil {
		return fmt.Errorf("ICMPv6: %w", err)
	}
	want, err := m.Marshal(icmp.IPv6PseudoHeader(src.AsSlice(), dst.AsSlice()))
	if err != nil {
		return fmt.Errorf("ICMPv6: %w", err)
	}
	if !bytes.Equal(want[2:4], msg[2:4]) {
		return fmt.Errorf("bad ICMPv6 checksum %#04x, want %#04x", msg[2:4], want[2:4])
	}
	return nil
}

// checkDAD applies the extra rules for a solicitation from the unspecified
// address (Duplicate Address Detection): it must go to the target's
// solicited-node group and must not carry a source link-layer address.
func checkDAD(ns *ndp.NeighborSolicitation, dst netip.Addr) error {
	group, err := ndp.SolicitedNodeMulticast(ns.TargetAddress)
	if err != nil {
		return err
	}
	if dst != group {
		return fmt.Errorf("DAD solicitation for %s sent to %s, not %s", ns.TargetAddress, dst, group)
	}
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			return errors.New("DAD solicitation with a source link-layer address")
		}
	}
	return nil
}

// An advertisement is a Neighbor Advertisement and where it goes.
//
// Advertisements are sent as whole Ethernet frames on the packet socket
// rather than through an ndp.Conn, for two reasons. Their source address is
// the target address itself, as from a host that has the address configured
// (Linux does the same); the kernel would refuse that source on an ICMPv6
// socket because the VIP is not a local address, and some receivers (ndisc6,
// for one) ignore an answer from any other source. And an answer goes
// straight to the MAC the solicitation came from, so it depends neither on
// this node's routes to the solicitor nor on a neighbour lookup of its own.
type advertisement struct {
	na     *ndp.NeighborAdvertisement
	dst    netip.Addr
	dstMAC net.HardwareAddr
}

// answer builds the answer to a solicitation for an owned address (RFC 4861
// section 7.2.4): to the solicitor, or, when it is doing DAD and has no
// address yet, to all nodes and not marked solicited.
func answer(s *solicitation, mac net.HardwareAddr) advertisement {
	if s.src.IsUnspecified() {
		return announcement(s.target, mac)
	}
	a := advertisement{na: unsolicitedAdvertisement(s.target, mac), dst: s.src, dstMAC: s.srcMAC}
	a.na.Solicited = true
	return a
}

// announcement builds the unsolicited advertisement of addr to all nodes.
func announcement(addr netip.Addr, mac net.HardwareAddr) advertisement {
	allNodes := netip.IPv6LinkLocalAllNodes()
	return advertisement{na: unsolicitedAdvertisement(addr, mac), dst: allNodes, dstMAC: multicastMAC(allNodes)}
}

// unsolicitedAdvertisement builds the message that announces addr at mac.
// Override makes neighbours replace a cached MAC, the old owner's.
func unsolicitedAdvertisement(addr netip.Addr, mac net.HardwareAddr) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: addr,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
}

// frame builds the Ethernet frame of a from srcMAC, with the target address
// as IPv6 source.
func (a advertisement) frame(srcMAC net.HardwareAddr) ([]byte, error) {
	src := a.na.TargetAddress
	msg, err := ndp.MarshalMessageChecksum(a.na, src, a.dst)
	if err != nil {
		return nil, fmt.Errorf("neighbor advertisement for %s: %w", src, err)
	}
	f := ethernet.Frame{
		Destination: a.dstMAC,
		Source:      srcMAC,
		EtherType:   ethernet.EtherTypeIPv6,
		Payload:     append(ipv6Header(src, a.dst, len(msg)), msg...),
	}
	return f.MarshalBinary()
}

// dadSolicitation builds the Ethernet frame of a Duplicate Address
// Detection solicitation for addr from mac: from the unspecified address to
// addr's solicited-node group, without a source link-layer address (RFC 4862
// section 5.4.2). A host that answers addr answers it to all nodes.
func dadSolicitation(addr netip.Addr, mac net.HardwareAddr) ([]byte, error) {
	group, err := ndp.SolicitedNodeMulticast(addr)
	if err != nil {
		return nil, err
	}
	src := netip.IPv6Unspecified()
	msg, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: addr}, src, group)
	if err != nil {
		return nil, fmt.Errorf("neighbor solicitation for %s: %w", addr, err)
	}
	f := ethernet.Frame{
		Destination: multicastMAC(group),
		Source:      mac,
		EtherType:   ethernet.EtherTypeIPv6,
		Payload:     append(ipv6Header(src, group, len(msg)), msg...),
	}
	return f.MarshalBinary()
}

// ipv6Header builds the fixed IPv6 header of an NDP message: no extension
// headers, hop limit 255. (x/net/ipv6 parses headers but does not build them.)
func ipv6Header(src, dst netip.Addr, payloadLen int) []byte {
	h := make([]byte, ipv6.HeaderLen)
	h[0] = 6 << 4 // version; traffic class and flow label zero
	binary.BigEndian.PutUint16(h[4:6], uint16(payloadLen))
	h[6] = protocolICMPv6
	h[7] = ndp.HopLimit
	copy(h[8:24], src.AsSlice())
	copy(h[24:40], dst.AsSlice())
	return h
}

// multicastMAC is the Ethernet address of an IPv6 multicast group (RFC 2464
// section 7): 33:33 and the group's last four bytes.
func multicastMAC(group netip.Addr) net.HardwareAddr {
	g := group.As16()
	return net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
}

// syncGroups joins the solicited-node groups of the IPv6 addresses in want
// and leaves those no address in want maps to any more. A group that fails to
// join is not recorded, so the next SetAddresses tries again. Called with
// r.mu held.
func (r *Responder) syncGroups(want map[netip.Addr]struct{}) {
	if r.memberships == nil {
		return
	}
	join, leave := groupChanges(r.groups, solicitedNodeGroups(want))
	for _, g := range leave {
		if err := r.memberships.LeaveGroup(g); err != nil {
			r.logger.Error(err, "Leaving solicited-node multicast group failed", "group", g)
		}
		delete(r.groups, g)
	}
	for _, g := range join {
		if err := r.memberships.JoinGroup(g); err != nil {
			r.logger.Error(err, "Joining solicited-node multicast group failed: switches may not forward its solicitations", "group", g)
			continue
		}
		r.groups[g] = struct{}{}
	}
}

// solicitedNodeGroups returns the solicited-node multicast groups of the IPv6
// addresses in addrs.
func solicitedNodeGroups(addrs map[netip.Addr]struct{}) map[netip.Addr]struct{} {
	groups := map[netip.Addr]struct{}{}
	for a := range addrs {
		if g, err := ndp.SolicitedNodeMulticast(a); err == nil {
			groups[g] = struct{}{}
		}
	}
	return groups
}

// groupChanges returns, sorted, the groups in want but not joined, and those
// joined but not in want.
func groupChanges(joined, want map[netip.Addr]struct{}) (join, leave []netip.Addr) {
	for g := range want {
		if _, ok := joined[g]; !ok {
			join = append(join, g)
		}
	}
	for g := range joined {
		if _, ok := want[g]; !ok {
			leave = append(leave, g)
		}
	}
	slices.SortFunc(join, netip.Addr.Compare)
	slices.SortFunc(leave, netip.Addr.Compare)
	return join, leave
}
