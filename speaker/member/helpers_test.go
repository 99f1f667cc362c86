package member

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// eventually bounds every wait. Detection takes about Timeout (350 ms by
// default); the bound is generous so a loaded machine with -race passes.
const eventually = 5 * time.Second

// waitFor polls cond, bounded in both time and count, and fails the test
// with cond's last description of the state if it never holds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	var state string
	for range 1000 {
		var ok bool
		if ok, state = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last state: %s", what, eventually, state)
}

// freeAddr returns ip with a UDP port that was free a moment ago.
func freeAddr(t *testing.T, ip netip.Addr) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatalf("find a free UDP port on %s: %v", ip, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// loopback returns 127.0.subnet.host; each test uses its own subnet so
// parallel tests never share an address.
func loopback(subnet, host byte) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, subnet, host}) }

// testNode is one running Members.
type testNode struct {
	m      *Members
	cancel context.CancelFunc
	done   chan error
	exited bool
}

// wait waits, bounded, for Run to return.
func (n *testNode) wait(t *testing.T) {
	t.Helper()
	if n.exited {
		return
	}
	select {
	case err := <-n.done:
		n.exited = true
		if err != nil {
			t.Errorf("Run of %s: %v", n.m.node, err)
		}
	case <-time.After(eventually):
		t.Fatalf("Run of %s did not return within %v", n.m.node, eventually)
	}
}

// leave stops the node gracefully: it tells its peers.
func (n *testNode) leave(t *testing.T) { n.cancel(); n.wait(t) }

// crash stops the node without telling anyone.
func (n *testNode) crash(t *testing.T) { n.m.kill(); n.wait(t) }

// run starts a Members for node at bind with the given peers and info, and
// stops it when the test ends.
func run(t *testing.T, cfg Config, node string, bind netip.AddrPort, peers map[string]netip.AddrPort) *testNode {
	t.Helper()
	cfg.Node = node
	cfg.Bind = bind
	cfg.Logger = ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New %s: %v", node, err)
	}
	m.SetPeers(peers)
	m.SetInfo(map[string]string{"node": node, "if/eth0": "up"})
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(ctx) }()
	t.Cleanup(func() { n.cancel(); n.wait(t) })
	return n
}

// cluster is a set of members on loopback that all list each other.
type cluster struct {
	t     *testing.T
	cfg   Config
	addrs map[string]netip.AddrPort
	nodes map[string]*testNode
}

func newCluster(t *testing.T, subnet byte, cfg Config, names ...string) *cluster {
	c := &cluster{t: t, cfg: cfg, addrs: map[string]netip.AddrPort{}, nodes: map[string]*testNode{}}
	for i, name := range names {
		c.addrs[name] = freeAddr(t, loopback(subnet, byte(11+i)))
	}
	for _, name := range names {
		c.start(name)
	}
	return c
}

// start (re)starts a node. Its peer list includes itself, which SetPeers
// must ignore.
func (c *cluster) start(name string) *testNode {
	c.t.Helper()
	n := run(c.t, c.cfg, name, c.addrs[name], c.addrs)
	c.nodes[name] = n
	return n
}

func (c *cluster) view(name string) View { return c.nodes[name].m.View() }

// waitAlive waits until observer sees exactly want alive, not isolated, each
// with its own info.
func (c *cluster) waitAlive(observer string, want ...string) {
	c.t.Helper()
	slices.Sort(want)
	waitFor(c.t, fmt.Sprintf("%s sees %v alive", observer, want), func() (bool, string) {
		v := c.view(observer)
		if v.Isolated || !slices.Equal(aliveNames(v), want) {
			return false, describe(v)
		}
		for name, p := range v.Alive {
			if p.Info["node"] != name {
				return false, describe(v)
			}
		}
		return true, ""
	})
}

func aliveNames(v View) []string { return slices.Sorted(maps.Keys(v.Alive)) }

func describe(v View) string {
	var b strings.Builder
	fmt.Fprintf(&b, "isolated=%v", v.Isolated)
	for _, name := range aliveNames(v) {
		p := v.Alive[name]
		fmt.Fprintf(&b, " %s(direct=%v info=%v)", name, p.Direct, p.Info)
	}
	return b.String()
}

// drain empties a Changes channel.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
