// Package member tells a speaker which speakers are alive, fast, at any
// cluster size up to 500 L2 nodes (and beyond, at a larger datagram).
//
// Every speaker computes the owner of each service address from the same
// inputs, so the speakers must agree within a fraction of a second on who is
// alive. The Kubernetes API is too slow for that (node leases expire in tens
// of seconds), so speakers send each other UDP heartbeats over the node
// network.
//
// Gossip of ages, not lists. Each member sends a heartbeat every Interval to
// at most Fanout peers (all of them in clusters of up to Fanout+1). A
// heartbeat carries a vector with one 2-byte entry per member: how long ago
// that member sent the freshest heartbeat the sender knows of. A receiver
// keeps, per member, the freshest word from its own senders and their
// vectors. Word of a live member reaches everyone within a few hops; once a
// member dies, no fresher word exists anywhere, so every member sees it age
// past Timeout at about the same moment, Timeout after its last heartbeat,
// however many hops away it was. Nothing is truncated: every member's right
// to answer depends on a fixed-size vector, not on a list that can be cut.
//
// Fail safe. A member that hears none of the members that send to it is
// Isolated (the topology tells each member whom it must hear): it says so in
// its own heartbeats, and its caller stops answering; whether it is cut off
// or everyone else died cannot be told apart from inside.
//
// Authenticated. Every datagram carries an HMAC-SHA-256 under a cluster
// key; datagrams under no accepted key, with a wrong MAC, replayed (an
// incarnation and sequence number not above the last accepted), from a
// clock further off than MaxClockSkew, or from the wrong address are
// dropped after at most one HMAC and counted by reason. Two keys are
// accepted during a rotation.
package member

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Defaults for the zero values of Config.
const (
	DefaultPort         = 7947
	DefaultInterval     = 100 * time.Millisecond
	DefaultTimeout      = 350 * time.Millisecond
	DefaultMaxClockSkew = 30 * time.Second

	// maxTimeout keeps a live member's beats well within the span that can
	// be ordered.
	maxTimeout = 10 * time.Second
)

// A leaving heartbeat is sent leaveCopies times, leaveSpacing apart, so one
// lost datagram does not leave peers waiting for Timeout.
const (
	leaveCopies  = 3
	leaveSpacing = 10 * time.Millisecond
)

// Config configures Members.
type Config struct {
	// Node is this node's name, as it appears in SetPeers.
	Node string
	// Bind is the UDP address to listen and send on: the node IP that peers
	// list for this node, since heartbeats are only accepted from the
	// listed address. Port 0 means DefaultPort.
	Bind netip.AddrPort
	// Key signs the heartbeats; Accept are further keys accepted (during a
	// rotation). Key must be set; see SetKeys.
	Key    []byte
	Accept [][]byte
	// Interval is the heartbeat period; DefaultInterval if zero.
	Interval time.Duration
	// Timeout is how long a member's beat may stay without rising here
	// before it is dead; DefaultTimeout if zero. At least 3 Intervals.
	Timeout time.Duration
	// Fanout bounds the peers each heartbeat goes to; DefaultFanout if zero.
	Fanout int
	// MaxClockSkew is how far a heartbeat's send time may be from this
	// node's clock; DefaultMaxClockSkew if zero. It bounds replays of old
	// datagrams to a node that restarted and forgot their sequence numbers.
	MaxClockSkew time.Duration
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
	if len(c.Key) == 0 {
		return c, fmt.Errorf("member: node %s: no cluster key to sign heartbeats with", c.Node)
	}
	if c.Bind.Port() == 0 {
		c.Bind = netip.AddrPortFrom(c.Bind.Addr(), DefaultPort)
	}
	c.Bind = unmap(c.Bind)
	c.Interval = cmpOr(c.Interval, DefaultInterval)
	c.Timeout = cmpOr(c.Timeout, DefaultTimeout)
	c.MaxClockSkew = cmpOr(c.MaxClockSkew, DefaultMaxClockSkew)
	if c.Fanout == 0 {
		c.Fanout = DefaultFanout
	}
	if c.Interval <= beatUnit {
		return c, fmt.Errorf("member: Interval %v must exceed %v", c.Interval, beatUnit)
	}
	if c.Timeout < 3*c.Interval {
		return c, fmt.Errorf("member: Timeout %v must be at least 3 times Interval %v", c.Timeout, c.Interval)
	}
	if c.Timeout > maxTimeout {
		return c, fmt.Errorf("member: Timeout %v exceeds %v", c.Timeout, maxTimeout)
	}
	if c.Fanout < ringLinks+1 {
		return c, fmt.Errorf("member: Fanout %d is below %d", c.Fanout, ringLinks+1)
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
	// Alive holds the members with fresh word that are not leaving, by
	// name, this node included (while it is a member).
	Alive map[string]Peer
	// Members counts the members of the list given to SetPeers, this node
	// included.
	Members int
	// Isolated reports that this node heard none of the members that send
	// to it within Timeout, or that no member's heartbeat shows word of this
	// node within Timeout: it is cut off at least one way, and must not
	// answer for addresses another node may own now. A new member is
	// Isolated until it hears a peer that has heard of it.
	Isolated bool
	// ConnectedSince is when this node last stopped being Isolated; zero
	// while it is. Word of this node has reached every member once it is
	// older than a Timeout.
	ConnectedSince time.Time

	// Why Isolated, for the log.
	hearsSenders, heardOf bool
}

// Peer is what is known about a live member.
type Peer struct {
	// Direct reports that this node heard the member itself within Timeout;
	// false means only through other members' vectors.
	Direct bool
	// Isolated reports that the member said it answers for no address: it
	// hears none of its senders, or it abstains (SetAbstain).
	Isolated bool
}

// Members runs the heartbeats of one speaker and keeps the membership view.
type Members struct {
	node        string
	incarnation uint64
	interval    time.Duration
	timeout     time.Duration
	fanout      int
	maxSkew     time.Duration
	log         klog.Logger
	conn        *net.UDPConn
	keys        atomic.Pointer[keyring]
	changes     chan struct{}
	killed      chan struct{}
	killOnce    sync.Once
	running     atomic.Bool
	sent        atomic.Uint64 // datagrams sent, for tests and benchmarks
	// lastRound is when Run last went to send heartbeats (unix ns), and
	// heldUntil the end of the hold after a lapse or a cut (unix ns): see
	// Answerable and refreshLocked.
	lastRound atomic.Int64
	heldUntil atomic.Int64
	// heardUntil is when word of this node may go stale at the peers
	// (unix ns): a lapse after its beat last rose in their vectors. See
	// Heard.
	heardUntil atomic.Int64
	alone      atomic.Bool // a member with no peers
	// drop, a test hook, returns true to lose a datagram from one node to
	// another. It is checked on send and on receive, so a hook on one
	// member cuts both directions of its traffic.
	drop atomic.Pointer[func(from, to string) bool]

	// Used only by the Run goroutine.
	sendFailed map[string]bool // peers whose last send failed, to log transitions only

	// abstain: this node answers for no address while connected (see
	// SetAbstain); its heartbeats say it is isolated.
	abstain atomic.Bool

	mu      sync.Mutex
	seq     uint64 // of the last heartbeat sent
	topo    *topology
	words   []word // by member index
	senders map[string]sender
	// reported is the latest beat of this node's that a peer's vector
	// carried (heardOf: any at all), and reportedRose when that last rose
	// here: while the peers hear this node, it rises every Interval or so.
	reported     uint16
	reportedRose time.Time
	heardOf      bool
	// lapsed: this node went silent for longer than a lapse (see
	// Answerable); only a beat of its own from lapseBeat on, relayed back,
	// shows that the others hear it again.
	lapsed    bool
	lapseBeat uint16
	states    []memberState // by member index, as the view last said
	view      View          // last computed; never mutated, only replaced
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
	setReceiveBuffer(conn, cfg.Logger)
	m := &Members{
		node:        cfg.Node,
		incarnation: nextIncarnation(),
		interval:    cfg.Interval,
		timeout:     cfg.Timeout,
		fanout:      cfg.Fanout,
		maxSkew:     cfg.MaxClockSkew,
		log:         cfg.Logger.WithName("member"),
		conn:        conn,
		changes:     make(chan struct{}, 1),
		killed:      make(chan struct{}),
		sendFailed:  map[string]bool{},
		senders:     map[string]sender{},
	}
	m.keys.Store(newKeyring(cfg.Key, cfg.Accept))
	m.topo = newTopology(m.node, nil, m.fanout)
	m.refreshLocked(time.Now(), false)
	m.log.Info("Heartbeat socket bound", "node", m.node, "address", cfg.Bind, "incarnation", m.incarnation,
		"interval", m.interval, "timeout", m.timeout, "fanout", m.fanout)
	return m, nil
}

// SetKeys replaces the cluster keys: key signs from now on, and heartbeats
// under key or any of accept are accepted.
func (m *Members) SetKeys(key []byte, accept [][]byte) error {
	if len(key) == 0 {
		return errors.New("member: no signing key")
	}
	m.keys.Store(newKeyring(key, accept))
	return nil
}

// SetPeers replaces the member list: every node that takes part, by name,
// with the address its speaker listens on, this node included. A node left
// out of the list takes no part: it sends nothing and its view is empty.
// Word of members that stay is kept; of removed ones, forgotten.
func (m *Members) SetPeers(peers map[string]netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if same(m.topo, peers) {
		return
	}
	old := m.topo
	m.topo = newTopology(m.node, peers, m.fanout)
	m.alone.Store(m.topo.self >= 0 && len(m.topo.hear) == 0)
	words := make([]word, len(m.topo.names))
	for i, name := range m.topo.names {
		if j, ok := old.index[name]; ok {
			words[i] = m.words[j]
		}
	}
	m.words = words
	m.states = nil // indexes the old list: the next refresh rebuilds the view
	for name := range m.senders {
		if _, ok := m.topo.index[name]; !ok {
			delete(m.senders, name)
		}
	}
	m.log.V(1).Info("Member list changed", "node", m.node, "members", len(m.topo.names), "sendTo", len(m.topo.send), "hearFrom", len(m.topo.hear))
	m.refreshLocked(time.Now(), false)
}

// same reports whether peers is the member list t was built from.
func same(t *topology, peers map[string]netip.AddrPort) bool {
	if len(peers) != len(t.names) {
		return false
	}
	for name, addr := range peers {
		i, ok := t.index[name]
		if !ok || t.addrs[i] != unmap(addr) {
			return false
		}
	}
	return true
}

// View returns the current membership. The caller may keep and modify it.
func (m *Members) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refreshLocked(time.Now(), false)
	return cloneView(m.view)
}

// Changes is signalled whenever View would return something different: a
// member became alive or dead, or changed its Isolated, or this node's
// Isolated changed. Signals coalesce; read View after each.
func (m *Members) Changes() <-chan struct{} { return m.changes }

// Run sends and receives heartbeats until ctx ends, then tells its peers
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

	m.lastRound.Store(time.Now().UnixNano())
	m.sendHeartbeats(time.Now(), false)
	skipped := false
	for {
		select {
		case <-ctx.Done():
			for i := range leaveCopies {
				if i > 0 {
					time.Sleep(leaveSpacing)
				}
				m.sendHeartbeats(time.Now(), true)
			}
			m.log.Info("Left the membership", "node", m.node)
			return nil
		case <-m.killed:
			return nil
		case <-send.C:
			m.noteRound()
			m.sendHeartbeats(time.Now(), false)
		case tick := <-check.C:
			// A tick that comes late means this process was paused: the
			// datagrams that arrived meanwhile are read first, once.
			if late := time.Since(tick) > m.interval/2; late && !skipped {
				skipped = true
				continue
			}
			skipped = false
			m.mu.Lock()
			m.refreshLocked(time.Now(), true)
			m.mu.Unlock()
		}
	}
}

// SetAbstain sets whether this node, though connected, answers for no
// address and takes none: a node that just joined or came back from a cut
// and is not yet sure of who owns what. Its heartbeats then say it is
// isolated, so the peers count it out: they neither yield an address to it
// nor rank a new one to it, and an address it answered before goes to
// another node at once rather than waiting for it. Its own View is not
// affected.
func (m *Members) SetAbstain(abstain bool) { m.abstain.Store(abstain) }

// saysIsolatedLocked is what this node's heartbeats say of itself.
func (m *Members) saysIsolatedLocked() bool { return m.view.Isolated || m.abstain.Load() }

// Answerable reports whether this node may answer for addresses at all at
// this moment, whatever it owns: its process has kept sending heartbeats,
// never silent for a lapse (a Timeout, after which the peers count it dead),
// and it is not in the hold that follows a lapse or a cut. A process that was
// paused (SIGSTOP, CPU starvation, a long GC pause) wakes up with a set of
// addresses that others may have taken over meanwhile: until its heartbeat
// loop has run again, noticed the lapse, held this node cut off for a
// Timeout and heard its own beat relayed back, it answers nothing. The L2
// responders ask before every reply (l2.WithGate); it is a few atomic loads.
func (m *Members) Answerable() bool {
	now := time.Now().UnixNano()
	last := m.lastRound.Load()
	return last != 0 && now-last <= int64(m.lapse()) && now >= m.heldUntil.Load()
}

// Heard reports whether, at this instant, the peers surely still count this
// node alive: its own beat rose in their vectors less than Timeout −
// Interval ago (or it has no peers). Judged at the moment of asking, not on a timer: when the
// heartbeats stop both ways (a firewall, a cable), the owner stops answering
// before any peer can count it dead, however late its own timers run. The
// speaker asks it before every reply while the heartbeats decide who owns
// what (not in the fallback, where the Leases do).
func (m *Members) Heard() bool {
	return m.alone.Load() || time.Now().UnixNano() < m.heardUntil.Load()
}

// lapse is a silence of this node's after which the peers have probably
// counted it dead: they wait a Timeout from the last beat they got. A shorter
// silence (a busy machine) shuts the gate through Heard for a moment but
// moves nothing.
func (m *Members) lapse() time.Duration { return m.timeout }

// heardWindow is how long after its own beat last rose in a peer's vector
// this node surely counts as alive to every peer: they wait a Timeout from
// the beat they got, and an Interval is left for the network and the
// scheduler.
func (m *Members) heardWindow() time.Duration { return m.timeout - m.interval }

// noteRound records that Run goes to send heartbeats; after a lapse it cuts
// this node off at once, holds it so for a Timeout (long enough for the
// speaker to drop what it answers), and waits for a fresh beat of its own
// to come back.
func (m *Members) noteRound() {
	now := time.Now()
	last := m.lastRound.Swap(now.UnixNano())
	if last == 0 {
		return
	}
	silent := now.Sub(time.Unix(0, last))
	if silent <= m.lapse() {
		return
	}
	m.heldUntil.Store(now.Add(m.timeout).UnixNano())
	lapses.Inc()
	m.log.Info("Silent for longer than the others wait: they may count this node dead, so it answers nothing until they hear it again",
		"node", m.node, "silent", silent.Round(time.Millisecond), "lapse", m.lapse())
	m.mu.Lock()
	m.lapsed, m.lapseBeat, m.heardOf = true, beatAt(now), false
	m.heardUntil.Store(0)
	m.refreshLocked(now, true)
	m.mu.Unlock()
}

// Crash stops Run without the leaving heartbeat, as a crash would: for tests
// and benchmarks of failure detection.
func (m *Members) Crash() { m.kill() }

func (m *Members) kill() { m.killOnce.Do(func() { close(m.killed) }) }

// Sent counts the datagrams this Members sent.
func (m *Members) Sent() uint64 { return m.sent.Load() }

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

// sendHeartbeats sends one heartbeat to each target.
func (m *Members) sendHeartbeats(now time.Time, leaving bool) {
	m.mu.Lock()
	t := m.topo
	if t.self < 0 {
		m.mu.Unlock()
		return
	}
	m.seq++
	msg := &message{
		Node: m.node, Incarnation: m.incarnation, Seq: m.seq, Sent: now,
		Leaving: leaving, Isolated: m.saysIsolatedLocked(), MembersHash: t.hash, Vector: m.vectorLocked(now, leaving),
	}
	m.mu.Unlock()

	data := msg.encode(m.keys.Load().sign)
	if !leaving {
		for _, j := range t.send {
			m.sendTo(t.names[j], t.addrs[j], data)
		}
		return
	}
	// Word that this node leaves goes to every member at once rather than
	// through the relays: the nodes that take its addresses hear it within
	// a datagram's trip, not an Interval per hop. It is sent once per stop
	// (leaveCopies times), so its cost does not add to the rate at rest.
	for j := range t.names {
		if j != t.self {
			m.sendTo(t.names[j], t.addrs[j], data)
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
	m.sent.Add(1)
	heartbeatsSent.Inc()
}

// lastIncarnation keeps incarnations rising within one process too, where
// two Members may start in the same millisecond (tests, restarts in place).
var lastIncarnation atomic.Uint64

// nextIncarnation is the start time in Unix milliseconds, above every
// earlier one: a restarted speaker's heartbeats outrank its old ones, and a
// replay of an old incarnation is refused.
func nextIncarnation() uint64 {
	for {
		last := lastIncarnation.Load()
		next := max(uint64(time.Now().UnixMilli()), last+1)
		if lastIncarnation.CompareAndSwap(last, next) {
			return next
		}
	}
}

// cloneView copies v deeply, so the caller cannot change the cached view.
func cloneView(v View) View {
	alive := make(map[string]Peer, len(v.Alive))
	for name, p := range v.Alive {
		alive[name] = p
	}
	v.Alive = alive
	return v
}

// receiveBuffer is the heartbeat socket's receive buffer: a burst of
// datagrams that arrives while the reader waits for a core (a flood of
// forgeries, or many heartbeats at once on a busy node) waits there to be
// checked and counted instead of being dropped by the kernel, real
// heartbeats with it. The default (about 200 KiB) holds a few hundred.
const receiveBuffer = 4 << 20

// setReceiveBuffer sets receiveBuffer past the system's limit where this
// process may (CAP_NET_ADMIN, which the speaker has), else up to the limit.
func setReceiveBuffer(conn *net.UDPConn, log klog.Logger) {
	var forced error
	if raw, err := conn.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer)
		})
	}
	if forced != nil {
		if err := conn.SetReadBuffer(receiveBuffer); err != nil {
			log.V(2).Info("Cannot enlarge the heartbeat socket's receive buffer", "err", err)
		}
	}
}
