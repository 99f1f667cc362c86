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
const eventually = 10 * time.Second

// testKey is the cluster key of the tests' members.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// waitFor polls cond, bounded in both time and count, and fails the test
// with cond's last description of the state if it never holds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	waitWithin(t, eventually, what, cond)
}

// waitWithin is waitFor with a bound of its own.
func waitWithin(t *testing.T, bound time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(bound)
	var state string
	for range int(bound / (5 * time.Millisecond)) {
		var ok bool
		if ok, state = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last state: %s", what, bound, state)
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

// loopback returns the i-th address of a /16 of 127/8 of the test's own,
// so parallel tests never share an address.
func loopback(subnet byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, subnet, byte(i / 250), byte(i%250 + 1)})
}

// nodeName is a name as real clusters have them.
func nodeName(i int) string { return fmt.Sprintf("worker-%03d.k8s.example.internal", i) }

func nodeNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = nodeName(i + 1)
	}
	return names
}

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

// run starts a Members for node at bind with the given member list, and
// stops it when the test ends.
func run(t *testing.T, cfg Config, node string, bind netip.AddrPort, peers map[string]netip.AddrPort) *testNode {
	t.Helper()
	cfg.Node = node
	cfg.Bind = bind
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(0)))
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New %s: %v", node, err)
	}
	m.SetPeers(peers)
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
	names []string
	addrs map[string]netip.AddrPort
	nodes map[string]*testNode
}

func newCluster(t *testing.T, subnet byte, cfg Config, names ...string) *cluster {
	c := &cluster{t: t, cfg: cfg, names: names, addrs: map[string]netip.AddrPort{}, nodes: map[string]*testNode{}}
	for i, name := range names {
		c.addrs[name] = freeAddr(t, loopback(subnet, i))
	}
	for _, name := range names {
		c.start(name)
	}
	return c
}

// start (re)starts a node.
func (c *cluster) start(name string) *testNode {
	c.t.Helper()
	n := run(c.t, c.cfg, name, c.addrs[name], c.addrs)
	c.nodes[name] = n
	return n
}

func (c *cluster) view(name string) View { return c.nodes[name].m.View() }

// waitAlive waits until observer sees exactly want alive and is not isolated.
func (c *cluster) waitAlive(observer string, want ...string) {
	c.t.Helper()
	want = slices.Sorted(slices.Values(want))
	// Hearing of every member takes a few of the cluster's intervals; at 500 members with slow
	// timers on a loaded machine, longer than the usual bound.
	bound := max(eventually, 6*cmpOr(c.cfg.Timeout, DefaultTimeout))
	waitWithin(c.t, bound, fmt.Sprintf("%s sees %d alive", observer, len(want)), func() (bool, string) {
		v := c.view(observer)
		if v.Isolated || !slices.Equal(aliveNames(v), want) {
			return false, describe(v, want)
		}
		return true, ""
	})
}

// waitAllAlive waits until every running member sees exactly want alive.
func (c *cluster) waitAllAlive(want ...string) {
	c.t.Helper()
	for _, name := range want {
		c.waitAlive(name, want...)
	}
}

func aliveNames(v View) []string { return slices.Sorted(maps.Keys(v.Alive)) }

// describe says how a view differs from want, briefly: at 500 members the
// whole view is too long for a failure message.
func describe(v View, want []string) string {
	var missing, extra []string
	for _, w := range want {
		if _, ok := v.Alive[w]; !ok {
			missing = append(missing, w)
		}
	}
	for name := range v.Alive {
		if !slices.Contains(want, name) {
			extra = append(extra, name)
		}
	}
	return fmt.Sprintf("isolated=%v alive=%d missing=%s extra=%s", v.Isolated, len(v.Alive), short(missing), short(extra))
}

func short(names []string) string {
	slices.Sort(names)
	if len(names) > 5 {
		return fmt.Sprintf("%s…(%d)", strings.Join(names[:5], ","), len(names))
	}
	return strings.Join(names, ",")
}

// drain empties a Changes channel.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
