package main

import (
	"cmp"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// tunedSWIM is memberlist's DefaultLANConfig tuned for failover within
// half a second, as a competitor aiming at the same target would: probe ten
// times as often, expect an ack within 50 ms (loopback and LAN round trips
// are far below), a suspicion timeout of SuspicionMult·max(1, log10 N)·
// ProbeInterval = 0.3 s at 30 members and 0.4 s at 100 (SuspicionMult 2
// also means no confirmations are awaited: k = SuspicionMult−2 = 0), and
// gossip every 20 ms so the verdict spreads in a few tens of ms. The rest
// (3 indirect probes, TCP fallback pings, Lifeguard awareness, push-pull
// every 30 s) stays at the defaults.
func tunedSWIM() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.GossipInterval = 20 * time.Millisecond
	return c
}

// describeSWIM is the config as the tables' header states it.
func describeSWIM(c *memberlist.Config) string {
	return fmt.Sprintf("ProbeInterval=%v ProbeTimeout=%v SuspicionMult=%d SuspicionMaxTimeoutMult=%d IndirectChecks=%d "+
		"GossipInterval=%v GossipNodes=%d RetransmitMult=%d PushPullInterval=%v TCPTimeout=%v DisableTcpPings=%v "+
		"AwarenessMaxMultiplier=%d EnableCompression=%v UDPBufferSize=%d SecretKey=32 bytes (AES-256-GCM, as MetalLB's memberlist Secret)",
		c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult, c.SuspicionMaxTimeoutMult, c.IndirectChecks,
		c.GossipInterval, c.GossipNodes, c.RetransmitMult, c.PushPullInterval, c.TCPTimeout, c.DisableTcpPings,
		c.AwarenessMaxMultiplier, c.EnableCompression, c.UDPBufferSize)
}

// swimCluster is size memberlist instances on loopback, each on an address
// of its own, joined through one another.
type swimCluster struct {
	base    *memberlist.Config
	key     []byte
	det     *detector
	names   []string
	ips     []string
	ports   []int
	nodes   []*swimNode
	counted swimCounters // shared by every member's transport and delegate
}

type swimNode struct {
	ml  *memberlist.Memberlist
	obs *swimObserver
}

// swimCounters count what memberlist sends, summed over the members.
type swimCounters struct {
	packets, packetBytes atomic.Uint64 // UDP datagrams written, and their payload bytes
	dials, streamBytes   atomic.Uint64 // TCP connections opened, and bytes both ways on them
	pushPulls            atomic.Uint64 // LocalState calls outside joins: two per push-pull exchange
}

func startSWIM(subnet byte, size int, base *memberlist.Config, det *detector) (*swimCluster, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	c := &swimCluster{base: base, key: key, det: det, names: nodeNames(size),
		ips: make([]string, size), ports: make([]int, size), nodes: make([]*swimNode, size)}
	for i := range c.names {
		c.ips[i] = loopback(subnet, i).String()
		if err := c.start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	// Every member joins through the first, as speakers joining through
	// the pod IPs they know would; a few at a time.
	errs := make(chan error, size)
	sem := make(chan struct{}, 4)
	for i := 1; i < size; i++ {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := c.nodes[i].ml.Join([]string{c.addr(0)}); err != nil {
				errs <- fmt.Errorf("memberlist: %s joins: %w", c.names[i], err)
				return
			}
			errs <- nil
		}()
	}
	var err error
	for i := 1; i < size; i++ {
		err = cmp.Or(err, <-errs)
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *swimCluster) addr(i int) string {
	return net.JoinHostPort(c.ips[i], strconv.Itoa(c.ports[i]))
}

// start creates member i on its address (on a port of its own the first
// time, on the same port again after Kill).
func (c *swimCluster) start(i int) error {
	discard := log.New(io.Discard, "", 0)
	var nt *memberlist.NetTransport
	var err error
	// The port was just closed by Shutdown, or is picked now; binding both
	// TCP and UDP to one port may need a retry.
	for range 50 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{c.ips[i]}, BindPort: c.ports[i], Logger: discard})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("memberlist transport for %s on %s: %w", c.names[i], c.ips[i], err)
	}
	if c.ports[i] == 0 {
		c.ports[i] = nt.GetAutoBindPort()
	}
	cfg := *c.base
	cfg.Name = c.names[i]
	cfg.BindAddr, cfg.BindPort = c.ips[i], c.ports[i]
	cfg.AdvertiseAddr, cfg.AdvertisePort = c.ips[i], c.ports[i]
	cfg.SecretKey = c.key
	cfg.Keyring = nil
	cfg.Logger, cfg.LogOutput = discard, nil
	cfg.Transport = &countingTransport{nt: nt, n: &c.counted}
	obs := &swimObserver{name: c.names[i], det: c.det}
	cfg.Events = obs
	cfg.Delegate = pushPullCounter{n: &c.counted}
	ml, err := memberlist.Create(&cfg)
	if err != nil {
		_ = nt.Shutdown()
		return fmt.Errorf("memberlist: create %s: %w", c.names[i], err)
	}
	c.nodes[i] = &swimNode{ml: ml, obs: obs}
	return nil
}

func (c *swimCluster) Size() int         { return len(c.names) }
func (c *swimCluster) Name(i int) string { return c.names[i] }

// Kill shuts member i down without a Leave: its peers learn nothing until
// their probes fail.
func (c *swimCluster) Kill(i int) {
	c.nodes[i].obs.stopped.Store(true)
	_ = c.nodes[i].ml.Shutdown()
}

// Restart creates member i again on its address and joins it through a
// live member; it refutes its own death with a higher incarnation.
func (c *swimCluster) Restart(i int) error {
	if err := c.start(i); err != nil {
		return err
	}
	seed := (i + 1) % len(c.names)
	if _, err := c.nodes[i].ml.Join([]string{c.addr(seed)}); err != nil {
		return fmt.Errorf("memberlist: %s rejoins: %w", c.names[i], err)
	}
	return nil
}

// Converged reports whether every member counts every member among its
// Members (alive or suspect: the speakers MetalLB counts usable).
func (c *swimCluster) Converged() (bool, string) {
	short, fewest := 0, len(c.names)
	for _, n := range c.nodes {
		if k := n.ml.NumMembers(); k != len(c.names) {
			short++
			fewest = min(fewest, k)
		}
	}
	return short == 0, fmt.Sprintf("%d members see fewer than all (fewest: %d)", short, fewest)
}

func (c *swimCluster) Counting(i int) []string {
	var out []string
	for j, n := range c.nodes {
		if j == i {
			continue
		}
		for _, m := range n.ml.Members() {
			if m.Name == c.names[i] {
				out = append(out, c.names[j])
				break
			}
		}
	}
	return out
}

func (c *swimCluster) Traffic() traffic {
	return traffic{
		packets: c.counted.packets.Load(), bytes: c.counted.packetBytes.Load(),
		dials: c.counted.dials.Load(), streamBytes: c.counted.streamBytes.Load(),
		pushPulls: c.counted.pushPulls.Load() / 2,
	}
}

// Stop shuts every member down, all at once: one by one, each waits for
// its listeners under the load of all the others.
func (c *swimCluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n != nil {
			n.obs.stopped.Store(true)
			wg.Go(func() { _ = n.ml.Shutdown() })
		}
	}
	wg.Wait()
}

// countingTransport is memberlist's own UDP and TCP transport, counting.
// It implements only Transport, not NodeAwareTransport (so it wraps rather
// than embeds NetTransport, whose node-aware methods would bypass it):
// memberlist then sends everything through WriteTo and DialTimeout, mapping
// its node-aware calls onto them.
type countingTransport struct {
	nt *memberlist.NetTransport
	n  *swimCounters
}

var _ memberlist.Transport = (*countingTransport)(nil)

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.nt.FinalAdvertiseAddr(ip, port)
}
func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.nt.PacketCh() }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.nt.StreamCh() }
func (t *countingTransport) Shutdown() error                     { return t.nt.Shutdown() }

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	at, err := t.nt.WriteTo(b, addr)
	if err == nil {
		t.n.packets.Add(1)
		t.n.packetBytes.Add(uint64(len(b)))
	}
	return at, err
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := t.nt.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	t.n.dials.Add(1)
	return &countingConn{Conn: conn, n: &t.n.streamBytes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// swimObserver reports the members memberlist declares dead to this
// member (NotifyLeave, which MetalLB's speaker reacts to).
type swimObserver struct {
	name    string
	det     *detector
	stopped atomic.Bool
}

func (o *swimObserver) NotifyJoin(*memberlist.Node)   {}
func (o *swimObserver) NotifyUpdate(*memberlist.Node) {}
func (o *swimObserver) NotifyLeave(n *memberlist.Node) {
	if !o.stopped.Load() {
		o.det.dead(o.name, n.Name, time.Now())
	}
}

// pushPullCounter is a Delegate that only counts push-pull exchanges: both
// ends call LocalState once per exchange.
type pushPullCounter struct{ n *swimCounters }

func (d pushPullCounter) NodeMeta(int) []byte             { return nil }
func (d pushPullCounter) NotifyMsg([]byte)                {}
func (d pushPullCounter) GetBroadcasts(int, int) [][]byte { return nil }
func (d pushPullCounter) MergeRemoteState([]byte, bool)   {}
func (d pushPullCounter) LocalState(join bool) []byte {
	if !join {
		d.n.pushPulls.Add(1)
	}
	return nil
}
