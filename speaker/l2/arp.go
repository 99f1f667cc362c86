package l2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// openARP opens the ARP socket, unless the interface has no IPv4 address
// (which mdlayher/arp requires).
func (r *Responder) openARP(addrs []net.Addr) error {
	if !hasAddr(addrs, netip.Addr.Is4) {
		r.logger.Info("Interface has no IPv4 address: IPv4 (ARP) answering unavailable")
		return nil
	}
	// Not arp.Dial: it leaks its socket when arp.New fails.
	p, err := packet.Listen(r.ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return fmt.Errorf("interface %s: opening ARP socket: %w", r.ifi.Name, err)
	}
	c, err := arp.New(r.ifi, p)
	if err != nil {
		_ = p.Close()
		return fmt.Errorf("interface %s: opening ARP client: %w", r.ifi.Name, err)
	}
	r.tuneQueue(p, protocolARP)
	r.arp, r.arpFrames = c, p
	r.arpMetrics = newCounters(protocolARP, r.ifi.Name)
	return nil
}

// serveARP answers ARP requests until the socket is closed or ctx ends.
func (r *Responder) serveARP(ctx context.Context) {
	var pause backoff
	for {
		req, frame, err := r.arp.Read()
		if err != nil {
			if r.isClosed() {
				return
			}
			// arp.Client.Read returns the parse error of a malformed frame as
			// is; socket errors come wrapped in a net.OpError.
			if opErr := (*net.OpError)(nil); !errors.As(err, &opErr) {
				r.logger.V(5).Info("Ignoring malformed ARP packet", "err", err)
				continue
			}
			r.logger.Error(err, "Reading ARP packets failed; retrying")
			if !pause.wait(ctx) {
				return
			}
			continue
		}
		pause.reset()
		if forUs(frame.Source, frame.Destination, r.ifi.HardwareAddr) {
			r.handleARP(req)
			if addr, kind := arpClaim(req); kind != notAClaim {
				r.noteClaim(addr, kind, req.SenderHardwareAddr)
			}
		}
	}
}

// handleARP replies to a request for an owned address, from our MAC to the
// asker's. Requests sent by our own MAC (packet sockets see outgoing frames,
// our announcements among them) are not answered.
func (r *Responder) handleARP(req *arp.Packet) {
	if req.Operation != arp.OperationRequest ||
		slices.Equal(req.SenderHardwareAddr, r.ifi.HardwareAddr) ||
		!r.owns(req.TargetIP) {
		return
	}
	r.arpMetrics.requests.Inc()
	if err := r.arp.Reply(req, r.ifi.HardwareAddr, req.TargetIP); err != nil {
		if !r.isClosed() {
			r.logger.Error(err, "Sending ARP reply failed", "address", req.TargetIP, "to", req.SenderIP)
		}
		return
	}
	r.arpMetrics.replies.Inc()
	r.logger.V(4).Info("Answered ARP request", "address", req.TargetIP, "from", req.SenderIP, "mac", req.SenderHardwareAddr)
}

// announceARP broadcasts a gratuitous ARP request for addr.
func (r *Responder) announceARP(addr netip.Addr) {
	if r.arp == nil {
		return
	}
	p, err := gratuitousARP(addr, r.ifi.HardwareAddr)
	if err == nil {
		err = r.arp.WriteTo(p, ethernet.Broadcast)
	}
	if err != nil {
		if !r.isClosed() {
			r.logger.Error(err, "Sending gratuitous ARP failed", "address", addr)
		}
		return
	}
	r.arpMetrics.gratuitous.Inc()
	r.logger.V(4).Info("Sent gratuitous ARP", "address", addr)
}

// gratuitousARP builds the RFC 5227 "ARP Announcement" of addr at mac: a
// request with sender and target IP both addr and a zero target MAC. It is a
// request rather than a reply because every stack updates an existing entry
// from it, while some ignore replies nobody asked for.
func gratuitousARP(addr netip.Addr, mac net.HardwareAddr) (*arp.Packet, error) {
	p, err := arp.NewPacket(arp.OperationRequest, mac, addr, make(net.HardwareAddr, len(mac)), addr)
	if err != nil {
		return nil, fmt.Errorf("gratuitous ARP for %s: %w", addr, err)
	}
	return p, nil
}
