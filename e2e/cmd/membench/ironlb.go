package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker/member"
)

// ironlbCluster is size speakers' member.Members on loopback, each on an
// address of its own, all listing each other.
type ironlbCluster struct {
	cfg   member.Config // Interval and Timeout; Node and Bind are set per member
	det   *detector
	names []string
	addrs map[string]netip.AddrPort
	nodes []*ironlbNode
	// retired is what members replaced by Restart had sent.
	retired traffic
}

// ironlbNode is one running Members and the goroutine that reports what
// its view loses.
type ironlbNode struct {
	m     *member.Members
	stop  context.CancelFunc // Run: leave gracefully
	done  chan struct{}      // closed when Run returned
	watch chan struct{}      // closed to stop the watcher
}

func startIronlb(subnet byte, size int, interval, timeout time.Duration, det *detector) (*ironlbCluster, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	c := &ironlbCluster{
		cfg:   member.Config{Key: key, Interval: interval, Timeout: timeout, Logger: logr.New(quiet{})},
		det:   det,
		names: nodeNames(size),
		addrs: make(map[string]netip.AddrPort, size),
		nodes: make([]*ironlbNode, size),
	}
	for i, name := range c.names {
		ap, err := freeUDP(loopback(subnet, i))
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.addrs[name] = ap
	}
	// Every member computes the whole heartbeat graph in SetPeers (57 ms of
	// CPU at 500 members, 180 ms at 1,000): build them all, on every CPU,
	// before any starts sending.
	built := make([]*member.Members, size)
	errs := make(chan error, size)
	next := make(chan int, size)
	for i := range size {
		next <- i
	}
	close(next)
	deadline := time.Now().Add(buildLimit)
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for i := range next {
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("building %d members took longer than %v", size, buildLimit)
					continue
				}
				m, err := c.build(i)
				built[i] = m
				errs <- err
			}
		}()
	}
	var err error
	for range size {
		err = cmp.Or(err, <-errs)
	}
	for i, m := range built {
		if m != nil {
			c.run(i, m)
		}
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// buildLimit bounds the building of a cluster: on a machine loaded by
// others, 1,000 members can take many minutes.
const buildLimit = 3 * time.Minute

// quiet is a log sink that drops everything: a thousand members' logs
// would cost more than their heartbeats. (logr.Discard has no sink, which
// member.Config reads as "use klog".)
type quiet struct{}

func (quiet) Init(logr.RuntimeInfo)            {}
func (quiet) Enabled(int) bool                 { return false }
func (quiet) Info(int, string, ...any)         {}
func (quiet) Error(error, string, ...any)      {}
func (q quiet) WithValues(...any) logr.LogSink { return q }
func (q quiet) WithName(string) logr.LogSink   { return q }

// freeUDP returns ip with a UDP port that was free a moment ago.
func freeUDP(ip netip.Addr) (netip.AddrPort, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("find a free UDP port on %s: %w", ip, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

// build makes member i, a new incarnation, on its address.
func (c *ironlbCluster) build(i int) (*member.Members, error) {
	cfg := c.cfg
	cfg.Node, cfg.Bind = c.names[i], c.addrs[c.names[i]]
	m, err := member.New(cfg)
	if err != nil {
		return nil, err
	}
	m.SetPeers(c.addrs)
	return m, nil
}

// run runs m as member i.
func (c *ironlbCluster) run(i int, m *member.Members) {
	name := c.names[i]
	ctx, cancel := context.WithCancel(context.Background())
	n := &ironlbNode{m: m, stop: cancel, done: make(chan struct{}), watch: make(chan struct{})}
	go func() {
		defer close(n.done)
		_ = m.Run(ctx)
	}()
	go c.watchView(name, n)
	if old := c.nodes[i]; old != nil {
		c.retired = c.retired.add(c.sentBy(i, old.m))
	}
	c.nodes[i] = n
}

// watchView reports every member that drops out of the view of member
// name, at the moment the view changed, as the speaker would learn it: on
// Changes.
func (c *ironlbCluster) watchView(name string, n *ironlbNode) {
	var prev map[string]member.Peer
	for {
		select {
		case <-n.watch:
			return
		case <-n.m.Changes():
		}
		at := time.Now()
		v := n.m.View()
		for peer := range prev {
			if _, ok := v.Alive[peer]; !ok {
				c.det.dead(name, peer, at)
			}
		}
		prev = v.Alive
	}
}

func (c *ironlbCluster) Size() int         { return len(c.names) }
func (c *ironlbCluster) Name(i int) string { return c.names[i] }
func (c *ironlbCluster) Kill(i int)        { close(c.nodes[i].watch); c.nodes[i].m.Crash() }

// Restart starts member i again after Kill, on the same address.
func (c *ironlbCluster) Restart(i int) error {
	if err := waitClosed(c.nodes[i].done, 10*time.Second); err != nil {
		return fmt.Errorf("%s: Run after Crash: %w", c.names[i], err)
	}
	m, err := c.build(i)
	if err != nil {
		return err
	}
	c.run(i, m)
	return nil
}

// Converged reports whether every member sees all members alive and is not
// isolated.
func (c *ironlbCluster) Converged() (bool, string) {
	isolated, short, fewest := 0, 0, len(c.names)
	for _, n := range c.nodes {
		v := n.m.View()
		if v.Isolated {
			isolated++
		}
		if len(v.Alive) != len(c.names) {
			short++
		}
		fewest = min(fewest, len(v.Alive))
	}
	return isolated == 0 && short == 0, fmt.Sprintf("%d members isolated, %d see fewer than all alive (fewest: %d)", isolated, short, fewest)
}

func (c *ironlbCluster) Counting(i int) []string {
	var out []string
	for j, n := range c.nodes {
		if _, ok := n.m.View().Alive[c.names[i]]; ok && j != i {
			out = append(out, c.names[j])
		}
	}
	return out
}

// Traffic counts what the members sent: datagrams from Sent, and their
// bytes from the wire format (speaker/member/wire.go): a fixed header of
// 41 bytes, the sender's name, the vector of 2 bytes per member and a
// 32-byte HMAC-SHA-256.
func (c *ironlbCluster) Traffic() traffic {
	t := c.retired
	for i, n := range c.nodes {
		t = t.add(c.sentBy(i, n.m))
	}
	return t
}

func (c *ironlbCluster) sentBy(i int, m *member.Members) traffic {
	sent := m.Sent()
	size := 41 + uvarintLen(len(c.names[i])) + len(c.names[i]) + uvarintLen(len(c.names)) + 2*len(c.names) + 32
	return traffic{packets: sent, bytes: sent * uint64(size)}
}

func uvarintLen(n int) int { return len(binary.AppendUvarint(nil, uint64(n))) }

// Stop stops every member gracefully, bounded.
func (c *ironlbCluster) Stop() {
	for _, n := range c.nodes {
		if n != nil {
			select {
			case <-n.watch:
			default:
				close(n.watch)
			}
			n.stop()
		}
	}
	for _, n := range c.nodes {
		if n != nil {
			_ = waitClosed(n.done, 10*time.Second)
		}
	}
}

func waitClosed(ch <-chan struct{}, limit time.Duration) error {
	select {
	case <-ch:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("not within %v", limit)
	}
}
