package l2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"k8s.io/klog/v2"
)

// defaultSchedule is when a new address is announced, as offsets from the
// moment it joined the set. Dense at first, for the switch and the neighbours
// that are talking to the address right now; spread out later, for a
// neighbour or a switch port that was briefly busy or down during a failover.
var defaultSchedule = []time.Duration{
	0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
}

// Read errors other than closure are retried after a pause that doubles from
// minBackoff up to maxBackoff, so a broken socket neither spins nor floods the log.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// An Option changes how New sets up a Responder.
type Option func(*config)

type config struct {
	schedule []time.Duration
	gate     func() bool
	probing  Probing
	conflict func(netip.Addr, net.HardwareAddr)
	// receiveQueue is the socket receive queue asked for, in bytes.
	receiveQueue int
}

// WithGate makes every reply and announcement wait for gate to return true
// at that moment: a fence that the membership holds shut while this node
// may be counted dead by the others (after its process was paused), whatever
// the set of addresses says.
func WithGate(gate func() bool) Option {
	return func(c *config) { c.gate = gate }
}

// WithGratuitousSchedule sets when an address new to the set is announced
// (gratuitous ARP, unsolicited Neighbor Advertisement), as offsets from the
// moment SetAddresses added it. Negative offsets count as zero; no offsets
// means no announcements. The default is +0, +250ms, +500ms, +1s, +2s, +4s.
func WithGratuitousSchedule(offsets ...time.Duration) Option {
	return func(c *config) {
		c.schedule = make([]time.Duration, len(offsets))
		for i, o := range offsets {
			c.schedule[i] = max(o, 0)
		}
		slices.Sort(c.schedule)
	}
}

// Responder answers ARP and NDP for a set of addresses on one interface.
// Its methods are safe for concurrent use.
type Responder struct {
	ifi      *net.Interface
	logger   klog.Logger
	schedule []time.Duration
	gate     func() bool // nil: always open
	probing  Probing
	conflict func(netip.Addr, net.HardwareAddr) // nil: not reported

	// receiveQueue is the receive queue asked for each packet socket.
	receiveQueue int

	// IPv4; arp and arpFrames, its packet socket, are nil when the
	// interface has no IPv4 address.
	arp        *arp.Client
	arpFrames  *packet.Conn
	arpMetrics counters

	// IPv6; both are nil when IPv6 is disabled on the interface. ndpFrames
	// receives Neighbor Solicitations and sends Neighbor Advertisements;
	// memberships holds the solicited-node multicast group memberships.
	ndpFrames   *packet.Conn
	memberships *ndp.Conn
	ndpMetrics  counters

	// announce sends one gratuitous announcement for an address, and probe
	// one probe (probe.go). They are fields so that tests can watch them
	// without sockets.
	announce func(netip.Addr)
	probe    func(netip.Addr)
	// announceCtx is the parent of every announcement schedule;
	// stopAnnouncements, called by Close, ends them all.
	announceCtx       context.Context
	stopAnnouncements context.CancelFunc
	announcers        sync.WaitGroup

	mu      sync.RWMutex
	running bool
	closed  bool
	// owned is the set answered for, each with the cancel of its schedule;
	// pending, the addresses of the set still looked at (probe.go).
	owned   map[netip.Addr]context.CancelFunc
	pending map[netip.Addr]*look
	// groups are the solicited-node multicast groups joined on memberships.
	groups map[netip.Addr]struct{}
}

// New opens the ARP and NDP sockets of the named interface, in the network
// namespace of the calling thread. A family the interface has no address of
// is unavailable, which is logged; New fails if both are.
func New(ifaceName string, logger klog.Logger, opts ...Option) (*Responder, error) {
	ifi, err := net.InterfaceByName(ifaceName)
	if err != nil {
		return nil, fmt.Errorf("interface %s not found: %w", ifaceName, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address", ifaceName)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("interface %s: listing its addresses: %w", ifaceName, err)
	}

	cfg := config{schedule: defaultSchedule, probing: DefaultProbing, receiveQueue: receiveQueue}
	for _, opt := range opts {
		opt(&cfg)
	}
	r := newResponder(ifi, logger, cfg)
	r.announce = r.sendAnnouncement
	r.probe = r.sendProbe

	if err := r.openARP(addrs); err != nil {
		return nil, err
	}
	if err := r.openNDP(addrs); err != nil {
		_ = r.closeSockets()
		return nil, err
	}
	if r.arp == nil && r.ndpFrames == nil {
		return nil, fmt.Errorf("interface %s has neither an IPv4 nor an IPv6 address: cannot answer ARP or NDP", ifaceName)
	}
	return r, nil
}

// newResponder sets up everything but the sockets.
func newResponder(ifi *net.Interface, logger klog.Logger, cfg config) *Responder {
	ctx, cancel := context.WithCancel(context.Background())
	return &Responder{
		ifi:               ifi,
		logger:            logger.WithValues("interface", ifi.Name),
		schedule:          cfg.schedule,
		gate:              cfg.gate,
		probing:           cfg.probing,
		conflict:          cfg.conflict,
		receiveQueue:      cfg.receiveQueue,
		arpMetrics:        newCounters(protocolARP, ifi.Name),
		ndpMetrics:        newCounters(protocolNDP, ifi.Name),
		announceCtx:       ctx,
		stopAnnouncements: cancel,
		owned:             map[netip.Addr]context.CancelFunc{},
		pending:           map[netip.Addr]*look{},
		groups:            map[netip.Addr]struct{}{},
	}
}

// Interface returns the name of the interface answered on.
func (r *Responder) Interface() string { return r.ifi.Name }

// HardwareAddr returns the MAC address that answers carry.
func (r *Responder) HardwareAddr() net.HardwareAddr { return slices.Clone(r.ifi.HardwareAddr) }

// Run reads and answers requests until ctx ends, then closes the Responder
// and returns nil. It may be called once.
func (r *Responder) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running || r.closed {
		r.mu.Unlock()
		return fmt.Errorf("interface %s: Run called on a responder that already ran or was closed", r.ifi.Name)
	}
	r.running = true
	r.mu.Unlock()

	var wg sync.WaitGroup
	if r.arp != nil {
		wg.Go(func() { r.serveARP(ctx) })
	}
	if r.ndpFrames != nil {
		wg.Go(func() { r.serveNDP(ctx) })
	}
	wg.Go(func() { r.watchDrops(ctx) })
	<-ctx.Done()
	err := r.Close()
	wg.Wait()
	return err
}

// Close stops all announcements and closes the sockets. Run calls it when
// its context ends; call it only for a Responder that never runs.
func (r *Responder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.stopAnnouncements()
	r.mu.Unlock()

	err := r.closeSockets()
	r.announcers.Wait()
	return err
}

func (r *Responder) closeSockets() error {
	var errs []error
	if r.arp != nil {
		errs = append(errs, r.arp.Close())
	}
	if r.ndpFrames != nil {
		errs = append(errs, r.ndpFrames.Close())
	}
	if r.memberships != nil {
		errs = append(errs, r.memberships.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("interface %s: closing sockets: %w", r.ifi.Name, err)
	}
	return nil
}

func (r *Responder) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}

// owns reports whether addr is in the set answered for, and the gate is
// open.
func (r *Responder) owns(addr netip.Addr) bool {
	if r.gate != nil && !r.gate() {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.owned[addr]
	return ok
}

// SetAddresses replaces the set of addresses answered for. Addresses leaving
// the set are no longer answered from the moment this returns, and their
// announcements stop (one already being sent may still go out). Addresses
// new to the set are looked at first (probe.go: one look when no other host
// answers them), then answered, announced at once and then on the schedule.
// Invalid, unspecified and multicast addresses are ignored and logged.
func (r *Responder) SetAddresses(addrs []netip.Addr) {
	want := r.normalize(addrs)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.logger.V(2).Info("Ignoring address update: responder closed")
		return
	}
	for addr, cancel := range r.owned {
		if _, keep := want[addr]; !keep {
			cancel()
			delete(r.owned, addr)
			r.logger.V(1).Info("Stopped answering", "address", addr)
		}
	}
	for addr, l := range r.pending {
		if _, keep := want[addr]; !keep {
			l.cancel()
			delete(r.pending, addr)
		}
	}
	// Join before announcing: neighbours may solicit right after hearing one.
	r.syncGroups(want)
	for addr := range want {
		if _, ok := r.owned[addr]; ok || r.pending[addr] != nil {
			continue
		}
		if r.probing.Window > 0 {
			r.pending[addr] = r.startLooking(addr)
		} else {
			r.owned[addr] = r.startAnnouncements(addr)
			r.logger.V(1).Info("Answering", "address", addr)
		}
		if !r.canAnswer(addr) {
			r.logger.Info("Cannot answer for address: its family is unavailable on this interface", "address", addr)
		}
	}
}

// normalize turns addrs into a set of plain addresses: IPv4-mapped IPv6
// addresses become IPv4 (as ARP reports them) and zones are dropped.
func (r *Responder) normalize(addrs []netip.Addr) map[netip.Addr]struct{} {
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			r.logger.Info("Ignoring address that cannot be answered for", "address", a)
			continue
		}
		set[a] = struct{}{}
	}
	return set
}

// counters are the counters of addr's protocol.
func (r *Responder) counters(addr netip.Addr) counters {
	if addr.Is4() {
		return r.arpMetrics
	}
	return r.ndpMetrics
}

func (r *Responder) canAnswer(addr netip.Addr) bool {
	if addr.Is4() {
		return r.arp != nil
	}
	return r.ndpFrames != nil
}

// startAnnouncements runs the announcement schedule of addr in the
// background and returns what stops it. Called with r.mu held.
func (r *Responder) startAnnouncements(addr netip.Addr) context.CancelFunc {
	ctx, cancel := context.WithCancel(r.announceCtx)
	r.announcers.Go(func() {
		start := time.Now()
		for _, offset := range r.schedule {
			if !sleepUntil(ctx, start.Add(offset)) {
				return
			}
			if r.gate == nil || r.gate() {
				r.announce(addr)
			}
		}
	})
	return cancel
}

// sendAnnouncement announces that addr is reachable at this interface's MAC.
func (r *Responder) sendAnnouncement(addr netip.Addr) {
	if addr.Is4() {
		r.announceARP(addr)
	} else {
		r.announceNDP(addr)
	}
}

// sleepUntil waits until t and reports whether ctx is still live then.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
	return ctx.Err() == nil
}

// backoff paces the retries of a read loop after errors.
type backoff struct{ d time.Duration }

// wait sleeps for the next, longer pause and reports whether ctx is still live.
func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, minBackoff), maxBackoff)
	return sleepUntil(ctx, time.Now().Add(b.d))
}

func (b *backoff) reset() { b.d = 0 }

// forUs reports whether a frame from src to dst is one to answer: not sent by
// this interface itself (packet sockets also see outgoing frames), and sent
// to this interface or to a group, not to another host's MAC (seen when the
// interface is promiscuous).
func forUs(src, dst, mac net.HardwareAddr) bool {
	if slices.Equal(src, mac) {
		return false
	}
	const groupBit = 0x01 // I/G bit: multicast and broadcast
	return slices.Equal(dst, mac) || (len(dst) > 0 && dst[0]&groupBit != 0)
}

// hasAddr reports whether any of the interface addresses satisfies ok.
func hasAddr(addrs []net.Addr, ok func(netip.Addr) bool) bool {
	for _, a := range addrs {
		ipn, isNet := a.(*net.IPNet)
		if !isNet {
			continue
		}
		if ip, valid := netip.AddrFromSlice(ipn.IP); valid && ok(ip.Unmap()) {
			return true
		}
	}
	return false
}
