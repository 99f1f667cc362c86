package lab

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Curl fetches http://addr:port/path from namespace ns once, with a 2 s
// limit, and returns the body.
func Curl(ctx context.Context, ns string, addr netip.Addr, port int, path string) (string, error) {
	return Exec(ctx, ns, "curl", CurlArgs(addr, port, path)...)
}

// CurlArgs are the curl arguments the lab uses, also printed for people.
func CurlArgs(addr netip.Addr, port int, path string) []string {
	return []string{"--silent", "--show-error", "--fail", "--max-time", "2", "http://" + hostPort(addr, port) + path}
}

// CurlUntil curls until the body contains want or attempts run out, waiting
// interval between tries; it returns the last body or error.
func CurlUntil(ctx context.Context, ns string, addr netip.Addr, port int, want string, attempts int, interval time.Duration) (string, error) {
	var body string
	var err error
	for i := 0; i < attempts; i++ {
		body, err = Curl(ctx, ns, addr, port, "/")
		if err == nil && strings.Contains(body, want) {
			return body, nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(interval)
	}
	if err == nil {
		err = fmt.Errorf("no answer containing %q from %s after %d tries; last: %q", want, addr, attempts, body)
	}
	return body, err
}

var (
	arpingReply = regexp.MustCompile(`from ([0-9a-fA-F:]{17})`)
	ndiscReply  = regexp.MustCompile(`(?i)target link-layer address:\s*([0-9a-f:]{17})`)
)

// AnsweringMACs asks once, from namespace ns, who has addr on the LAN (one
// ARP request for IPv4, one neighbour solicitation for IPv6), waits a
// second for every answer to that one question, and returns each distinct
// MAC that answered, sorted. Two MACs mean two nodes answer at the same
// time: split brain. (Asking several times could catch an owner handing over
// to the next between two questions, which is no split brain.)
func AnsweringMACs(ctx context.Context, ns string, addr netip.Addr) ([]net.HardwareAddr, error) {
	var out string
	var err error
	var re *regexp.Regexp
	if addr.Is4() {
		out, err = Exec(ctx, ns, "arping", "-c", "1", "-w", "1", "-i", "eth0", addr.String())
		re = arpingReply
	} else {
		out, err = Exec(ctx, ns, "ndisc6", "-m", "-n", "-r", "1", "-w", "1000", addr.String(), "eth0")
		re = ndiscReply
	}
	seen := map[string]net.HardwareAddr{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if mac, perr := net.ParseMAC(m[1]); perr == nil {
			seen[mac.String()] = mac
		}
	}
	if len(seen) == 0 {
		if err != nil && !strings.Contains(err.Error(), "exit status") {
			return nil, err
		}
		return nil, nil
	}
	var macs []net.HardwareAddr
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		macs = append(macs, seen[k])
	}
	return macs, nil
}

// Neighbour is what namespace ns's neighbour table holds for addr on eth0:
// the MAC its traffic goes to now, nil if none.
func Neighbour(ctx context.Context, ns string, addr netip.Addr) (net.HardwareAddr, error) {
	out, err := Exec(ctx, ns, "ip", family(addr), "neigh", "show", "to", addr.String(), "dev", "eth0")
	if err != nil {
		return nil, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return net.ParseMAC(f[i+1])
		}
	}
	return nil, nil
}

// FlushNeighbour forgets what namespace ns knows of addr's MAC.
func FlushNeighbour(ctx context.Context, ns string, addr netip.Addr) error {
	_, err := Exec(ctx, ns, "ip", family(addr), "neigh", "flush", "to", addr.String(), "dev", "eth0")
	return err
}

// StaticRoute routes prefix through node n in namespace ns (the router or a
// client): a test's stand-in for an announcement.
func (l *Lab) StaticRoute(ctx context.Context, ns string, prefix netip.Prefix, n int) error {
	gw := l.NodeAddrs(n)[0]
	if prefix.Addr().Is6() {
		gw = l.NodeAddrs(n)[1]
	}
	return ipBatch(ctx, ns, fmt.Sprintf("route replace %s via %s proto static", prefix, gw))
}

// DeleteStaticRoute removes a route StaticRoute added.
func (l *Lab) DeleteStaticRoute(ctx context.Context, ns string, prefix netip.Prefix) error {
	return ipBatch(ctx, ns, fmt.Sprintf("route del %s proto static", prefix))
}

// nodeProcs are the processes that run on node n: kube-proxy, the speaker,
// its endpoints.
func (l *Lab) nodeProcs(n int) []Proc {
	var procs []Proc
	for _, p := range l.Processes() {
		if p.Namespace == l.NodeNS(n) {
			procs = append(procs, p)
		}
	}
	return procs
}

// NodeDown simulates node n dying: its switch port goes down, so it neither
// sends nor receives, and every process on it is killed at once.
func (l *Lab) NodeDown(ctx context.Context, n int) error {
	if err := l.SetLink(ctx, n, false); err != nil {
		return err
	}
	for _, p := range l.nodeProcs(n) {
		p.kill()
	}
	return nil
}

// NodeUp brings node n back: its port up and its processes started again.
func (l *Lab) NodeUp(ctx context.Context, n int) error {
	if err := l.SetLink(ctx, n, true); err != nil {
		return err
	}
	for _, p := range l.nodeProcs(n) {
		if p.alive() {
			continue
		}
		if err := l.Restart(p.Name); err != nil {
			return err
		}
	}
	if l.Alive("kube-proxy@" + l.NodeName(n)) {
		return l.WaitKubeProxy(ctx, n)
	}
	return nil
}

// SetLink sets node n's switch port up or down; the node sees its link
// lose carrier, as when a cable is pulled.
func (l *Lab) SetLink(ctx context.Context, n int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipBatch(ctx, l.SwitchNS(), fmt.Sprintf("link set %s %s", l.PortName(n), state))
}

// SetNodeInterface sets node n's own eth0 up or down (the node stays up).
func (l *Lab) SetNodeInterface(ctx context.Context, n int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := ipBatch(ctx, l.NodeNS(n), "link set eth0 "+state); err != nil || !up {
		return err
	}
	// A link going down takes its routes along.
	return ipBatch(ctx, l.NodeNS(n), nodeRoutes(l.Plan, n)...)
}
