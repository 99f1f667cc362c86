package l2

// The real-network test: a node and a client network namespace joined by a
// veth pair. The Responder runs in the node namespace in a copy of this test
// binary started with `ip netns exec` (TestHelperResponder): a socket belongs
// to the namespace of the thread that opens it, and a whole process in the
// namespace keeps every thread the Responder's goroutines may use there,
// which a locked thread in this process could not promise for its lifetime.
// The client side uses Debian's arping, ndisc6 and tcpdump, and, for the
// short-lived unicast solicitation, one locked thread switched into the
// client namespace.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netns"
	"k8s.io/klog/v2/textlogger"

	"github.com/ironlb/ironlb/internal/netnstest"
)

// Environment of the helper process.
const (
	helperIfaceEnv    = "ILBT_L2_HELPER_IFACE"    // interface to serve; set only in the helper
	helperAddrsEnv    = "ILBT_L2_HELPER_ADDRS"    // file with the address set, re-read for changes
	helperScheduleEnv = "ILBT_L2_HELPER_SCHEDULE" // comma-separated announcement offsets
)

// A short schedule keeps the test quick while still checking the repeats.
var testSchedule = []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}

// The test network. Node and client addresses are on the interfaces; the
// VIPs are answered by the Responder only.
var (
	nodeMAC   = ourMAC
	clientMAC = theirMAC
	fakeMAC   = "02:31:f8:00:00:99"
	vip4      = netip.MustParseAddr("172.31.248.10")
	other4    = netip.MustParseAddr("172.31.248.11")
	other6    = netip.MustParseAddr("fd31:0:0:f80::11")
)

type testNet struct {
	node, client         string // namespaces
	nodeLink, clientLink string
}

func TestResponderOnVeth(t *testing.T) {
	n := setupNet(t)
	addrs := filepath.Join(t.TempDir(), "addrs")
	writeAddrs(t, addrs, 1, vip4, vip6)
	h := startHelper(t, n, addrs)
	h.WaitLine(t, "answered 1", 20*time.Second)

	t.Run("answered", func(t *testing.T) {
		if macs := n.arping(t, vip4); len(macs) != 1 || macs[0] != nodeMAC.String() {
			t.Errorf("ARP for %s answered by %v, want only %s", vip4, macs, nodeMAC)
		}
		if mac := n.ndisc6(t, vip6); mac != nodeMAC.String() {
			t.Errorf("NDP for %s answered by %q, want %s", vip6, mac, nodeMAC)
		}
		if !n.joined(t, vip6Group) {
			t.Errorf("node did not join %s", vip6Group)
		}
	})
	t.Run("not in set", func(t *testing.T) {
		if macs := n.arping(t, other4); len(macs) != 0 {
			t.Errorf("ARP for %s answered by %v, want no answer", other4, macs)
		}
		if mac := n.ndisc6(t, other6); mac != "" {
			t.Errorf("NDP for %s answered by %s, want no answer", other6, mac)
		}
	})
	t.Run("unicast solicitation", func(t *testing.T) {
		n.pinNeighbor(t, vip6, nodeMAC.String())
		n.pinNeighbor(t, other6, nodeMAC.String())
		na, err := n.solicitUnicast(vip6)
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, na, vip6)
		// The Responder saw it addressed to the VIP itself, not to a group.
		if !netnstest.Poll(2*time.Second, func() bool {
			return h.logged(`"Answered neighbor solicitation"`, `to="`+vip6.String()+`"`)
		}) {
			t.Errorf("helper log shows no answer to a solicitation sent to %s", vip6)
		}
		if na, err := n.solicitUnicast(other6); err != nil || na != nil {
			t.Errorf("unicast solicitation for %s: answer %+v, error %v; want no answer", other6, na, err)
		}
	})
	t.Run("duplicate address detection", func(t *testing.T) {
		// The client tries to take the VIP; the Responder's answer to its
		// DAD solicitation must make that fail.
		netnstest.Sysctl(t, n.client, "net.ipv6.conf."+n.clientLink+".accept_dad", "1")
		_, _ = netnstest.Run("ip", "-n", n.client, "neigh", "del", vip6.String(), "dev", n.clientLink) // pinned above
		netnstest.IP(t, "-n", n.client, "addr", "add", vip6.String()+"/64", "dev", n.clientLink)
		t.Cleanup(func() {
			_, _ = netnstest.Run("ip", "-n", n.client, "addr", "del", vip6.String()+"/64", "dev", n.clientLink)
		})
		if !netnstest.Poll(5*time.Second, func() bool {
			return strings.Contains(netnstest.IP(t, "-n", n.client, "-6", "addr", "show", "dev", n.clientLink), "dadfailed")
		}) {
			t.Errorf("client took %s without noticing it is in use:\n%s", vip6, netnstest.IP(t, "-n", n.client, "-6", "addr", "show", "dev", n.clientLink))
		}
		netnstest.IP(t, "-n", n.client, "addr", "del", vip6.String()+"/64", "dev", n.clientLink)
		netnstest.Sysctl(t, n.client, "net.ipv6.conf."+n.clientLink+".accept_dad", "0")
	})

	writeAddrs(t, addrs, 2)
	h.WaitLine(t, "applied 2", 10*time.Second)
	t.Run("removed", func(t *testing.T) {
		if macs := n.arping(t, vip4); len(macs) != 0 {
			t.Errorf("ARP for removed %s answered by %v", vip4, macs)
		}
		if mac := n.ndisc6(t, vip6); mac != "" {
			t.Errorf("NDP for removed %s answered by %s", vip6, mac)
		}
		n.pinNeighbor(t, vip6, nodeMAC.String())
		if na, err := n.solicitUnicast(vip6); err != nil || na != nil {
			t.Errorf("unicast solicitation for removed %s: answer %+v, error %v", vip6, na, err)
		}
		if n.joined(t, vip6Group) {
			t.Errorf("node still in %s with no address mapping to it", vip6Group)
		}
	})

	t.Run("announced", func(t *testing.T) {
		// Stale entries that point elsewhere, as after a failover.
		for _, a := range []netip.Addr{vip4, vip6} {
			netnstest.IP(t, "-n", n.client, "neigh", "replace", a.String(), "lladdr", fakeMAC, "dev", n.clientLink, "nud", "stale")
		}
		capture := n.captureAnnouncements(t)
		writeAddrs(t, addrs, 3, vip4, vip6)
		h.WaitLine(t, "answered 3", 10*time.Second)
		for _, a := range []netip.Addr{vip4, vip6} {
			if !netnstest.Poll(3*time.Second, func() bool { return strings.Contains(n.neighbor(t, a), nodeMAC.String()) }) {
				t.Errorf("client's entry for %s not updated to %s: %s", a, nodeMAC, n.neighbor(t, a))
			}
		}
		time.Sleep(testSchedule[len(testSchedule)-1] + time.Second) // let the schedule end, and any extra repeat show
		arpLines, naLines := capture.stop(t)
		if arpLines != len(testSchedule) || naLines != len(testSchedule) {
			t.Errorf("client saw %d gratuitous ARPs and %d unsolicited NAs, want %d each:\n%s", arpLines, naLines, len(testSchedule), capture.output())
		}
	})

	t.Run("another host answers", func(t *testing.T) {
		// The client has other4 and other6 configured, so its kernel
		// answers them: the Responder, told to answer them too, looks and
		// waits while it does, and answers once the client lets them go.
		for _, a := range []string{other4.String() + "/32", other6.String() + "/128"} {
			netnstest.IP(t, "-n", n.client, "addr", "add", a, "dev", n.clientLink, "nodad")
		}
		writeAddrs(t, addrs, 4, vip4, vip6, other4, other6)
		h.WaitLine(t, "applied 4", 10*time.Second)
		for _, a := range []netip.Addr{other4, other6} {
			if !netnstest.Poll(3*time.Second, func() bool {
				return h.logged(`"Another host answers the address`, `address="`+a.String()+`"`, `mac="`+clientMAC.String()+`"`)
			}) {
				t.Errorf("the Responder did not see the client answer %s", a)
			}
		}
		time.Sleep(time.Second)
		if h.logged(`"Answering"`, `address="`+other4.String()+`"`) || h.logged(`"Answering"`, `address="`+other6.String()+`"`) {
			t.Fatal("the Responder answers an address while another host answers it")
		}
		for _, a := range []string{other4.String() + "/32", other6.String() + "/128"} {
			netnstest.IP(t, "-n", n.client, "addr", "del", a, "dev", n.clientLink)
		}
		gone := time.Now()
		h.WaitLine(t, "answered 4", 5*time.Second)
		t.Logf("answered %v after the client let the addresses go", time.Since(gone).Round(time.Millisecond))
		if macs := n.arping(t, other4); len(macs) != 1 || macs[0] != nodeMAC.String() {
			t.Errorf("ARP for %s answered by %v, want only %s", other4, macs, nodeMAC)
		}
		if mac := n.ndisc6(t, other6); mac != nodeMAC.String() {
			t.Errorf("NDP for %s answered by %q, want %s", other6, mac, nodeMAC)
		}
	})

	metrics := h.stop(t)
	for _, proto := range []string{protocolARP, protocolNDP} {
		m := metrics[proto]
		// Announced: the VIP twice (sets 1 and 3), the other address once.
		if m["requests"] < 1 || m["replies"] < 1 || m["gratuitous"] != float64(3*len(testSchedule)) || m["waited"] != 1 {
			t.Errorf("%s counters %v: want requests and replies >= 1, gratuitous %d, waited 1", proto, m, 3*len(testSchedule))
		}
	}
}

// checkAnswer checks a solicited advertisement for target from the node.
func checkAnswer(t *testing.T, na *ndp.NeighborAdvertisement, target netip.Addr) {
	t.Helper()
	if na == nil {
		t.Fatalf("no advertisement for %s", target)
	}
	if !na.Solicited || !na.Override || na.Router {
		t.Errorf("advertisement flags S=%v O=%v R=%v, want S and O only", na.Solicited, na.Override, na.Router)
	}
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target && lla.Addr.String() == nodeMAC.String() {
			return
		}
	}
	t.Errorf("advertisement options %v lack target link-layer address %s", na.Options, nodeMAC)
}

// setupNet creates the namespaces, the veth pair and the addresses, and
// deletes them when the test ends.
func setupNet(t *testing.T) *testNet {
	t.Helper()
	netnstest.RequireRoot(t, "./speaker/l2/")
	netnstest.RequireTools(t, "iproute2, procps, arping, ndisc6, tcpdump, coreutils", "ip", "sysctl", "arping", "ndisc6", "tcpdump", "timeout")
	node, client := netnstest.VethPair(t, "ilbt",
		netnstest.Side{Suffix: "n", MAC: nodeMAC.String(), Addrs: []string{"172.31.248.1/24", "fd31:0:0:f80::1/64"}},
		netnstest.Side{Suffix: "c", MAC: clientMAC.String(), Addrs: []string{"172.31.248.2/24", "fd31:0:0:f80::2/64"}})
	n := &testNet{node: node.NS, client: client.NS, nodeLink: node.Link, clientLink: client.Link}
	for _, side := range []netnstest.End{node, client} {
		if !netnstest.Poll(10*time.Second, func() bool {
			out := netnstest.IP(t, "-n", side.NS, "-6", "addr", "show", "dev", side.Link, "scope", "link")
			return strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative")
		}) {
			t.Fatalf("no usable link-local address on %s in %s", side.Link, side.NS)
		}
	}
	return n
}

// arping asks for addr from the client and returns the MACs that answered.
func (n *testNet) arping(t *testing.T, addr netip.Addr) []string {
	t.Helper()
	out, err := netnstest.Run("ip", "netns", "exec", n.client, "arping", "-c", "2", "-w", "1", "-i", n.clientLink, addr.String())
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("arping %s: %v\n%s", addr, err, out)
	}
	seen := map[string]bool{}
	var macs []string
	for _, m := range regexp.MustCompile(`from ([0-9a-f:]{17})`).FindAllStringSubmatch(out, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			macs = append(macs, m[1])
		}
	}
	return macs
}

// ndisc6 solicits addr (multicast) from the client and returns the MAC of
// the answer, lower case, or "" for none.
func (n *testNet) ndisc6(t *testing.T, addr netip.Addr) string {
	t.Helper()
	out, err := netnstest.Run("ip", "netns", "exec", n.client, "ndisc6", "-n", "-r", "2", "-w", "300", addr.String(), n.clientLink)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ndisc6 %s: %v\n%s", addr, err, out)
	}
	if m := regexp.MustCompile(`Target link-layer address: ([0-9A-Fa-f:]{17})`).FindStringSubmatch(out); m != nil {
		return strings.ToLower(m[1])
	}
	return ""
}

// joined reports whether the node's link is in the multicast group.
func (n *testNet) joined(t *testing.T, group netip.Addr) bool {
	t.Helper()
	for line := range strings.Lines(netnstest.IP(t, "-n", n.node, "maddr", "show", "dev", n.nodeLink)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "inet6" && f[1] == group.String() {
			return true
		}
	}
	return false
}

// pinNeighbor makes the client send everything for addr to mac, so that a
// solicitation sent to addr goes out as unicast to mac.
func (n *testNet) pinNeighbor(t *testing.T, addr netip.Addr, mac string) {
	t.Helper()
	netnstest.IP(t, "-n", n.client, "neigh", "replace", addr.String(), "lladdr", mac, "dev", n.clientLink, "nud", "permanent")
}

func (n *testNet) neighbor(t *testing.T, addr netip.Addr) string {
	t.Helper()
	return netnstest.IP(t, "-n", n.client, "neigh", "show", addr.String(), "dev", n.clientLink)
}

// solicitUnicast sends, from the client, a neighbor solicitation for target
// to target itself (a neighbour-unreachability probe) and returns the
// advertisement for target that comes back within a second, or nil.
func (n *testNet) solicitUnicast(target netip.Addr) (*ndp.NeighborAdvertisement, error) {
	var na *ndp.NeighborAdvertisement
	err := inNamespace(n.client, func() error {
		ifi, err := net.InterfaceByName(n.clientLink)
		if err != nil {
			return err
		}
		c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return err
		}
		defer c.Close()
		ns := &ndp.NeighborSolicitation{
			TargetAddress: target,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}},
		}
		if err := c.WriteTo(ns, nil, target); err != nil {
			return fmt.Errorf("sending solicitation for %s: %w", target, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		for range 100 {
			m, _, _, err := c.ReadFrom()
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				return nil
			}
			if err != nil {
				return err
			}
			if adv, ok := m.(*ndp.NeighborAdvertisement); ok && adv.TargetAddress == target {
				na = adv
				return nil
			}
		}
		return nil
	})
	return na, err
}

// inNamespace runs fn on a thread switched into the named network namespace.
// The thread stays locked and ends with its goroutine rather than return to
// the scheduler in the wrong namespace.
func inNamespace(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("namespace %s: %w", name, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// capture is a tcpdump in the client namespace.
type capture struct {
	cmd *exec.Cmd
	out *os.File
}

// captureAnnouncements starts capturing, on the client's link, the node's
// gratuitous ARPs (sender IP = target IP) and unsolicited NAs (S flag clear).
func (n *testNet) captureAnnouncements(t *testing.T) *capture {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "tcpdump"))
	if err != nil {
		t.Fatal(err)
	}
	filter := fmt.Sprintf("ether src %s and ((arp and arp[6:2] == 1 and arp[14:4] == arp[24:4]) or (icmp6 and ip6[40] == 136 and ip6[44] & 0x40 == 0))", nodeMAC)
	cmd := exec.Command("ip", "netns", "exec", n.client, "timeout", "30", "tcpdump", "-i", n.clientLink, "-n", "-l", filter)
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &capture{cmd: cmd, out: out}
	t.Cleanup(func() { c.stop(t) })
	listening := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		found := false
		for s.Scan() {
			if !found && strings.Contains(s.Text(), "listening on") {
				found = true
				listening <- true
			}
		}
		if !found {
			listening <- false
		}
	}()
	select {
	case ok := <-listening:
		if !ok {
			t.Fatal("tcpdump exited before listening")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump not listening within 10s")
	}
	return c
}

// stop ends the capture (once) and counts ARP and neighbor advertisement lines.
func (c *capture) stop(t *testing.T) (arpLines, naLines int) {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(os.Interrupt) // timeout passes it on to tcpdump
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	out := c.output()
	return strings.Count(out, "ARP, Request"), strings.Count(out, "neighbor advertisement")
}

func (c *capture) output() string {
	b, _ := os.ReadFile(c.out.Name())
	return string(b)
}

// writeAddrs replaces the helper's address file with generation gen.
func writeAddrs(t *testing.T, path string, gen int, addrs ...netip.Addr) {
	t.Helper()
	lines := []string{strconv.Itoa(gen)}
	for _, a := range addrs {
		lines = append(lines, a.String())
	}
	netnstest.WriteFileAtomic(t, path, []byte(strings.Join(lines, "\n")+"\n"))
}

// readAddrs reads an address file: the generation, then one address a line.
func readAddrs(path string) (int, []netip.Addr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return 0, nil, fmt.Errorf("%s is empty", path)
	}
	gen, err := strconv.Atoi(lines[0])
	if err != nil {
		return 0, nil, err
	}
	var addrs []netip.Addr
	for _, l := range lines[1:] {
		a, err := netip.ParseAddr(l)
		if err != nil {
			return 0, nil, err
		}
		addrs = append(addrs, a)
	}
	return gen, addrs, nil
}

// helper is the Responder process in the node namespace.
type helper struct {
	*netnstest.Helper
}

func startHelper(t *testing.T, n *testNet, addrs string) *helper {
	t.Helper()
	var offsets []string
	for _, d := range testSchedule {
		offsets = append(offsets, d.String())
	}
	h := &helper{netnstest.StartHelper(t, netnstest.HelperConfig{
		Namespace: n.node,
		Test:      "TestHelperResponder",
		Env:       []string{helperIfaceEnv + "=" + n.nodeLink, helperAddrsEnv + "=" + addrs, helperScheduleEnv + "=" + strings.Join(offsets, ",")},
	})}
	t.Cleanup(func() { h.stop(t) }) // runs before the helper's own, which shows its log
	return h
}

// logged reports whether a line of the helper's log contains all of parts.
func (h *helper) logged(parts ...string) bool {
	b, _ := os.ReadFile(h.LogPath)
	for line := range strings.Lines(string(b)) {
		if all(parts, func(p string) bool { return strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

func all(ss []string, ok func(string) bool) bool {
	for _, s := range ss {
		if !ok(s) {
			return false
		}
	}
	return true
}

// stop stops the helper (once) and returns the counters it printed on the
// way out, by protocol and name.
func (h *helper) stop(t *testing.T) map[string]map[string]float64 {
	metrics := map[string]map[string]float64{}
	lines, err := h.Stop(t)
	for _, line := range lines {
		if fields := strings.Fields(line); len(fields) > 2 && fields[0] == "metrics" {
			metrics[fields[1]] = map[string]float64{}
			for _, kv := range fields[2:] {
				k, v, _ := strings.Cut(kv, "=")
				metrics[fields[1]][k], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	if err != nil {
		t.Errorf("helper: %v", err)
	}
	return metrics
}

// TestHelperResponder is the Responder process of TestResponderOnVeth, which
// starts it in the node namespace. Run directly, it does nothing.
func TestHelperResponder(t *testing.T) {
	iface := os.Getenv(helperIfaceEnv)
	if iface == "" {
		return
	}
	var schedule []time.Duration
	for s := range strings.SplitSeq(os.Getenv(helperScheduleEnv), ",") {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		schedule = append(schedule, d)
	}
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(5), textlogger.Output(os.Stderr)))
	r, err := New(iface, logger, WithGratuitousSchedule(schedule...))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := netnstest.HelperContext()
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()

	path, applied := os.Getenv(helperAddrsEnv), 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			gen, addrs, err := readAddrs(path)
			if err != nil {
				t.Error(err)
				continue
			}
			if gen > applied {
				r.SetAddresses(addrs)
				applied = gen
				fmt.Printf("applied %d\n", gen)
				// Answered after a look (probe.go), or more while another
				// host answers them.
				go func() {
					if netnstest.Poll(time.Minute, func() bool { return ownsAll(r, addrs) }) {
						fmt.Printf("answered %d\n", gen)
					}
				}()
			}
		}
	}
	if err := <-ran; err != nil {
		t.Error(err)
	}
	for proto, c := range map[string]counters{protocolARP: r.arpMetrics, protocolNDP: r.ndpMetrics} {
		fmt.Printf("metrics %s requests=%v replies=%v gratuitous=%v waited=%v\n", proto, value(c.requests), value(c.replies), value(c.gratuitous), value(c.waited))
	}
}

func ownsAll(r *Responder, addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !r.owns(a) {
			return false
		}
	}
	return true
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
