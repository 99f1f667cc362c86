// Package member tells a speaker which speakers are alive, fast.
//
// Every speaker computes the owner of each service address from the same
// inputs, so the speakers must agree within a fraction of a second on who is
// alive. The Kubernetes API is too slow for that (node leases expire in tens
// of seconds), so speakers send each other UDP heartbeats directly over the
// node network: every Interval, one datagram to every peer. A peer not heard
// for Timeout is dead.
//
// Each heartbeat also lists the nodes its sender heard directly, so a peer
// this node cannot reach but some other live peer can is still alive (a
// partial partition must not make two nodes each claim the other's
// addresses). A node that hears nobody, although it recently heard two or
// more peers, is cut off itself: it reports itself Isolated so its caller
// stops answering. With a single peer (two nodes) a dead peer and a cut-off
// node look the same, and the survivor must keep serving, so it is not.
//
// Scale: every speaker sends N-1 datagrams per Interval. The heard list of one
// heartbeat fits about 30 relayed nodes with short names and info (see
// maxDatagram); in larger clusters it is truncated, most recently heard
// first, so relaying (not direct detection) degrades beyond that size.
package member

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// Defaults for the zero values of Config.
const (
	DefaultPort     = 7947
	DefaultInterval = 100 * time.Millisecond
	DefaultTimeout  = 350 * time.Millisecond
	DefaultForget   = 60 * time.Second
)

// A leaving heartbeat is sent leaveCopies times, leaveSpacing apart, so one
// lost datagram does not leave peers waiting for Timeout.
const (
	leaveCopies  = 3
	leaveSpacing = 10 * time.Millisecond
)

// Config configures Members.
type Config struct {
	// Node is this node's name, as peers list it in their SetPeers.
	Node string
	// Bind is the UDP address to listen and send on: the node IP that peers
	// list for this node, since heartbeats are only accepted from the
	// listed address. Port 0 means DefaultPort.
	Bind netip.AddrPort
	// Interval is the heartbeat period; DefaultInterval if zero.
	Interval time.Duration
	// Timeout is how long a peer may stay silent before it is dead;
	// DefaultTimeout if zero. It must exceed Interval.
	Timeout time.Duration
	// Forget is how long a silent peer still counts as one that should be
	// heard, for isolation; DefaultForget if zero. It must be at least Timeout.
	Forget time.Duration
	// Logger receives the membership logs; klog.Background() if zero.
	Logger klog.Logger
}

// withDefaults fills in zero values and checks the combination.
func (c Config) withDefaults() (Config, error) {
	if c.Node == "" {
		return c, errors.New("member: Config.Node is empty")
	}
	if !c.Bind.Addr().IsValid() {
		return c, fmt.Errorf("member: node %s: Config.Bind has no IP address", c.Node)
	}
	if c.Bind.Port() == 0 {
		c.Bind = netip.AddrPortFrom(c.Bind.Addr(), DefaultPort)
	}
	c.Bind = unmap(c.Bind)
	c.Interval = cmpOr(c.Interval, DefaultInterval)
	c.Timeout = cmpOr(c.Timeout, DefaultTimeout)
	c.Forget = cmpOr(c.Forget, DefaultForget)
	if c.Interval < time.Millisecond {
		return c, fmt.Errorf("member: Interval %v is below 1ms", c.Interval)
	}
	if c.Timeout <= c.Interval {
		return c, fmt.Errorf("member: Timeout %v must exceed Interval %v", c.Timeout, c.Interval)
	}
	if c.Forget < c.Timeout {
		return c, fmt.Errorf("member: Forget %v must be at least Timeout %v", c.Forget, c.Timeout)
	}
	if c.Logger.GetSink() == nil {
		c.Logger = klog.Background()
	}
	return c, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// unmap turns an IPv4-mapped IPv6 address into IPv4, so addresses compare
// equal however the socket reports them.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// View is a snapshot of the membership.
type View struct {
	// Alive holds the live nodes by name, this node included with its own
	// info. While Isolated, it holds only this node.
	Alive map[string]Peer
	// Isolated reports that this node hears no peer although it heard two
	// or more within Forget: it is probably cut off, and must not answer for
	// addresses another node may own now.
	Isolated bool
}

// Peer is what is known about a live node.
type Peer struct {
	// Info is the node's SetInfo, as last heard.
	Info map[string]string
	// Direct reports that this node heard the peer itself; false means it is
	// alive only through a relay (another peer hears it).
	Direct bool
	// HearsUs reports that the peer's latest heartbeat lists this node (this
	// incarnation) as heard: the peer knows this node is alive. A node that
	// takes an address over waits for that from every peer it hears, so the
	// node that answered before has let go first.
	HearsUs bool
}

// Members runs the heartbeats of one speaker and keeps the membership view.
type Members struct {
	node        string
	incarnation uint64
	interval    time.Duration
	timeout     time.Duration
	forget      time.Duration
	log         klog.Logger
	conn        *net.UDPConn
	changes     chan struct{}
	killed      chan struct{}
	killOnce    sync.Once
	running     atomic.Bool
	// drop, a test hook, returns true to lose a datagram from one node to
	// another. It is checked on send and on receive, so a hook on one
	// member cuts both directions of its traffic.
	drop atomic.Pointer[func(from, to string) bool]

	// Used only by the Run goroutine.
	sendFailed map[string]bool // peers whose last send failed, to log transitions only

	mu     sync.Mutex
	seq    uint64 // of the last heartbeat sent
	info   map[string]string
	peers  map[string]netip.AddrPort
	states map[string]*peerState
	left   map[string]uint64 // incarnation that said it is leaving, by node
	view   View              // last computed; never mutated, only replaced
}

// New binds the heartbeat socket, so a busy or foreign address fails here,
// at startup, rather than in Run. Run releases the socket.
func New(cfg Config) (*Members, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Bind))
	if err != nil {
		return nil, fmt.Errorf("member: node %s: listen for heartbeats on UDP %s: %w", cfg.Node, cfg.Bind, err)
	}
	m := &Members{
		node:        cfg.Node,
		incarnation: rand.Uint64(),
		interval:    cfg.Interval,
		timeout:     cfg.Timeout,
		forget:      cfg.Forget,
		log:         cfg.Logger.WithName("member"),
		conn:        conn,
		changes:     make(chan struct{}, 1),
		killed:      make(chan struct{}),
		sendFailed:  map[string]bool{},
		peers:       map[string]netip.AddrPort{},
		states:      map[string]*peerState{},
		left:        map[string]uint64{},
	}
	m.view = m.computeView(time.Now())
	m.log.Info("Heartbeat socket bound", "node", m.node, "address", cfg.Bind, "incarnation", m.incarnation,
		"interval", m.interval, "timeout", m.timeout)
	return m, nil
}

// SetPeers replaces the nodes that should exist, by name, with the address
// their speaker listens on. Only they are heard; an entry for this node
// itself is ignored. Removed peers are forgotten at once.
func (m *Members) SetPeers(peers map[string]netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peers = make(map[string]netip.AddrPort, len(peers))
	for name, addr := range peers {
		if name != m.node {
			m.peers[name] = unmap(addr)
		}
	}
	for name := range m.states {
		if _, ok := m.peers[name]; !ok {
			delete(m.states, name)
		}
	}
	for name := range m.left {
		if _, ok := m.peers[name]; !ok {
			delete(m.left, name)
		}
	}
	m.refreshLocked(time.Now())
}

// SetInfo replaces the facts about this node that every heartbeat carries.
// Keep it to a few short entries: it is sent whole in every datagram.
func (m *Members) SetInfo(info map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.info = maps.Clone(info)
	m.refreshLocked(time.Now())
}

// View returns the current membership. The caller may keep and modify it.
func (m *Members) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refreshLocked(time.Now())
	return cloneView(m.view)
}

// Changes is signalled whenever View would return something different: a
// node became alive or dead, an alive node's info or Direct changed, or
// Isolated changed. Signals coalesce; read View after each.
func (m *Members) Changes() <-chan struct{} { return m.changes }

// Run sends and receives heartbeats until ctx ends, then tells every peer
// this node is leaving, so they drop it at once, closes the socket and
// returns nil. It may be called once; to rejoin, create a new Members, which
// is a new incarnation.
func (m *Members) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return fmt.Errorf("member: node %s: Run called twice", m.node)
	}
	received := make(chan struct{})
	go func() {
		defer close(received)
		m.receive()
	}()
	defer func() {
		_ = m.conn.Close()
		<-received
	}()

	send := time.NewTicker(m.interval)
	defer send.Stop()
	// Expiry has to be noticed with no datagram arriving (a dead peer sends
	// none), so the view is recomputed on a timer too.
	check := time.NewTicker(m.interval / 2)
	defer check.Stop()

	m.sendHeartbeats(time.Now())
	for {
		select {
		case <-ctx.Done():
			m.leave()
			m.log.Info("Left the membership", "node", m.node)
			return nil
		case <-m.killed:
			return nil
		case now := <-send.C:
			m.sendHeartbeats(now)
		case now := <-check.C:
			m.mu.Lock()
			m.refreshLocked(now)
			m.mu.Unlock()
		}
	}
}

// kill stops Run without the leaving heartbeat, as a crash would.
func (m *Members) kill() { m.killOnce.Do(func() { close(m.killed) }) }

// setDrop installs the test hook that loses datagrams; nil restores delivery.
func (m *Members) setDrop(fn func(from, to string) bool) {
	if fn == nil {
		m.drop.Store(nil)
		return
	}
	m.drop.Store(&fn)
}

func (m *Members) dropped(from, to string) bool {
	fn := m.drop.Load()
	return fn != nil && (*fn)(from, to)
}

// receive handles datagrams until the socket is closed.
func (m *Members) receive() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			m.log.V(2).Info("Reading heartbeat failed", "node", m.node, "err", err)
			time.Sleep(m.interval / 10) // do not spin on a persistent error
			continue
		}
		m.handle(unmap(from), buf[:n], time.Now())
	}
}

// sendHeartbeats sends one heartbeat to every peer.
func (m *Members) sendHeartbeats(now time.Time) {
	m.mu.Lock()
	m.seq++
	msg := &message{
		Node: m.node, Incarnation: m.incarnation, Seq: m.seq,
		Info: m.info, Heard: m.heardLocked(now),
	}
	targets := maps.Clone(m.peers)
	m.mu.Unlock()

	data, n := msg.encode()
	if n < len(msg.Heard) {
		m.log.V(4).Info("Heard list truncated to fit one datagram", "node", m.node, "sent", n, "heard", len(msg.Heard))
	}
	for name, addr := range targets {
		m.sendTo(name, addr, data)
	}
}

// leave sends the leaving heartbeat to every peer, a few times over.
func (m *Members) leave() {
	m.mu.Lock()
	m.seq++
	msg := &message{Node: m.node, Incarnation: m.incarnation, Seq: m.seq, Leaving: true}
	targets := maps.Clone(m.peers)
	m.mu.Unlock()

	data, _ := msg.encode()
	for i := range leaveCopies {
		if i > 0 {
			time.Sleep(leaveSpacing)
		}
		for name, addr := range targets {
			m.sendTo(name, addr, data)
		}
	}
}

// sendTo sends one datagram to a peer. Failures are logged when they start
// and stop, not every Interval.
func (m *Members) sendTo(name string, addr netip.AddrPort, data []byte) {
	if m.dropped(m.node, name) {
		return
	}
	_, err := m.conn.WriteToUDPAddrPort(data, addr)
	failed := err != nil
	if failed != m.sendFailed[name] {
		if failed {
			m.log.Error(err, "Sending heartbeats to peer failed", "node", m.node, "peer", name, "address", addr)
		} else {
			m.log.Info("Sending heartbeats to peer works again", "node", m.node, "peer", name, "address", addr)
		}
	}
	if failed {
		m.sendFailed[name] = true
		return
	}
	delete(m.sendFailed, name)
	heartbeatsSent.Inc()
}
