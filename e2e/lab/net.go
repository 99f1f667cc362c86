package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// labRanges are the only addresses a lab uses. The root namespace gets an
// unreachable route for each, so a packet for a lab address that no lab
// link covers fails here instead of leaving the machine.
var labRanges = []netip.Prefix{netip.MustParsePrefix("172.31.0.0/16"), netip.MustParsePrefix("fd31::/48")}

// run runs a command and returns its output; the error carries the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ipBatch runs iproute2 commands, one per line, in namespace ns ("" for the root namespace).
func ipBatch(ctx context.Context, ns string, lines ...string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Exec runs a command in namespace ns and returns its combined output.
func Exec(ctx context.Context, ns, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func sysctl(ctx context.Context, ns string, settings ...string) error {
	_, err := Exec(ctx, ns, "sysctl", append([]string{"-q", "-w"}, settings...)...)
	return err
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "-4"
	}
	return "-6"
}

// addrLines assigns addresses with the prefix length of their subnet; IPv6
// addresses skip duplicate address detection, which would hold them back
// for seconds.
func addrLines(dev string, addrs []netip.Addr, subnets []netip.Prefix) []string {
	var lines []string
	for i, a := range addrs {
		l := fmt.Sprintf("addr add %s dev %s", netip.PrefixFrom(a, subnets[i].Bits()), dev)
		if a.Is6() {
			l += " nodad"
		}
		lines = append(lines, l)
	}
	return lines
}

func defaultRoutes(gw []netip.Addr) []string {
	var lines []string
	for _, g := range gw {
		lines = append(lines, fmt.Sprintf("route replace default via %s", g))
	}
	return lines
}

// nodeRoutes are node n's default routes, through the router, and its
// routes to the other nodes' pods, as a host-gateway CNI sets them.
func nodeRoutes(p Plan, n int) []string {
	lines := defaultRoutes(p.RouterLAN())
	for m := 1; m <= p.Nodes; m++ {
		if m == n {
			continue
		}
		for i, pc := range p.NodePodCIDRs(m) {
			lines = append(lines, fmt.Sprintf("route replace %s via %s", pc, p.NodeAddrs(m)[i]))
		}
	}
	return lines
}

// buildNetwork creates the namespaces and links of the plan:
//
//	root ── <prefix>-api ─┐
//	client ── eth0 ───────┤
//	node1..N ── eth0 ─────┤ br0 in <prefix>-switch
//	router ── eth0 ───────┘
//	router ── eth1 ── eth0 of external
func buildNetwork(ctx context.Context, p Plan) error {
	for _, ns := range p.Namespaces() {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		// No duplicate address detection: addresses are planned, and a
		// tentative address would delay every start by seconds.
		// No ICMP redirects: a node that forwards a packet it cannot serve
		// yet (kube-proxy syncs once a second) would otherwise redirect the
		// client to the router for minutes.
		if err := sysctl(ctx, ns,
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
			"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0",
			"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0",
			// A link that goes down and up keeps its IPv6 addresses, as IPv4 ones are kept.
			"net.ipv6.conf.all.keep_addr_on_down=1", "net.ipv6.conf.default.keep_addr_on_down=1",
		); err != nil {
			return err
		}
		if err := ipBatch(ctx, ns, "link set lo up"); err != nil {
			return err
		}
	}
	routers := []string{p.RouterNS()}
	for n := 1; n <= p.Nodes; n++ {
		routers = append(routers, p.NodeNS(n))
	}
	for _, ns := range routers {
		// Nodes forward as a CNI would have them do, or kube-proxy's
		// traffic to endpoints on other nodes is dropped.
		if err := sysctl(ctx, ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
	}

	sw := []string{"link add br0 type bridge", "link set br0 up"}
	attach := func(port, ns string) {
		sw = append(sw,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", port, ns),
			fmt.Sprintf("link set %s master br0 up", port))
	}
	attach("router", p.RouterNS())
	attach("client", p.ClientNS())
	for n := 1; n <= p.Nodes; n++ {
		attach(p.NodeName(n), p.NodeNS(n))
	}
	if err := ipBatch(ctx, p.SwitchNS(), sw...); err != nil {
		return err
	}

	lan := p.LAN()
	for n := 1; n <= p.Nodes; n++ {
		lines := nodeLinkLines(p, n, lan)
		if err := ipBatch(ctx, p.NodeNS(n), lines...); err != nil {
			return err
		}
	}

	client := append([]string{"link set eth0 up"}, addrLines("eth0", p.ClientAddrs(), lan)...)
	if err := ipBatch(ctx, p.ClientNS(), append(client, defaultRoutes(p.RouterLAN())...)...); err != nil {
		return err
	}

	router := []string{
		"link set eth0 up",
		fmt.Sprintf("link add eth1 type veth peer name eth0 netns %s", p.ExternalNS()),
		"link set eth1 up",
	}
	router = append(router, addrLines("eth0", p.RouterLAN(), lan)...)
	router = append(router, addrLines("eth1", p.RouterExternal(), p.External())...)
	if err := ipBatch(ctx, p.RouterNS(), router...); err != nil {
		return err
	}
	ext := append([]string{"link set eth0 up"}, addrLines("eth0", p.ExternalAddrs(), p.External())...)
	if err := ipBatch(ctx, p.ExternalNS(), append(ext, defaultRoutes(p.RouterExternal())...)...); err != nil {
		return err
	}

	// The root namespace joins the LAN only to serve the API server.
	if err := ipBatch(ctx, "",
		fmt.Sprintf("link add %s type veth peer name api netns %s", p.RootLink(), p.SwitchNS()),
	); err != nil {
		return err
	}
	if err := ipBatch(ctx, p.SwitchNS(), "link set api master br0 up"); err != nil {
		return err
	}
	// Nothing that arrives from the lab is forwarded by the root namespace.
	if _, err := run(ctx, "sysctl", "-q", "-w",
		"net.ipv4.conf."+p.RootLink()+".forwarding=0",
		"net.ipv6.conf."+p.RootLink()+".accept_ra=0",
		"net.ipv6.conf."+p.RootLink()+".accept_dad=0"); err != nil {
		return err
	}
	root := append([]string{fmt.Sprintf("link set %s up", p.RootLink())}, addrLines(p.RootLink(), p.APIAddrs(), lan)...)
	if err := ipBatch(ctx, "", root...); err != nil {
		return err
	}
	return ensureUnreachable(ctx)
}

// ensureUnreachable adds the root namespace's unreachable routes for the lab
// ranges if they are missing. Labs come up side by side (the test suites run in
// parallel): a route another lab added between the look and the add is there,
// as wanted, so the add's "File exists" is no error then.
func ensureUnreachable(ctx context.Context) error {
	for _, r := range labRanges {
		ok, err := hasUnreachable(ctx, r)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if _, err := run(ctx, "ip", family(r.Addr()), "route", "add", "unreachable", r.String()); err != nil {
			if ok, _ := hasUnreachable(ctx, r); !ok {
				return err
			}
		}
	}
	return nil
}

// hasUnreachable says whether the root namespace has the unreachable route for r.
func hasUnreachable(ctx context.Context, r netip.Prefix) (bool, error) {
	out, err := run(ctx, "ip", family(r.Addr()), "route", "show", "type", "unreachable", "exact", r.String())
	return strings.TrimSpace(out) != "", err
}

// removeUnreachable removes them once no lab is left.
func removeUnreachable(ctx context.Context) {
	for _, r := range labRanges {
		_, _ = run(ctx, "ip", family(r.Addr()), "route", "del", "unreachable", r.String())
	}
}

// removeNetwork deletes every namespace and root link with the plan's prefix,
// also those a crashed run left behind, after killing any process still in
// one of them.
func removeNetwork(ctx context.Context, p Plan) error {
	var errs []string
	for _, ns := range ExistingNamespaces(ctx, p) {
		if out, err := run(ctx, "ip", "netns", "pids", ns); err == nil {
			for _, f := range strings.Fields(out) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					if t, ok := startTicks(pid); ok {
						Proc{Name: "leftover in " + ns, Pid: pid, StartTicks: t}.killOne()
					}
				}
			}
		}
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil && !alreadyGone(err) {
			errs = append(errs, err.Error())
		}
	}
	if out, err := run(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, p.Prefix()+"-") {
				// A root link whose peer was in a namespace just deleted
				// goes away with it, maybe between listing and deleting.
				if _, err := run(ctx, "ip", "link", "del", name); err != nil && !alreadyGone(err) {
					errs = append(errs, err.Error())
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove lab network: %s", strings.Join(errs, "; "))
	}
	return nil
}

// alreadyGone says whether an ip command failed only because what it was to
// delete is not there (any more): for teardown, that is success.
func alreadyGone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Cannot find device") || strings.Contains(msg, "No such file or directory")
}

// ExistingNamespaces lists the namespaces named with the plan's prefix.
func ExistingNamespaces(ctx context.Context, p Plan) []string {
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], p.Prefix()+"-") {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

// RootExec runs a command in the root namespace and returns its combined output.
func RootExec(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, name, args...)
}

// nodeLinkLines set up node n's eth0 on the LAN: its MAC, its addresses and
// its routes.
func nodeLinkLines(p Plan, n int, lan []netip.Prefix) []string {
	lines := []string{
		fmt.Sprintf("link set eth0 address %s", p.NodeMAC(n)),
		"link set eth0 up",
	}
	lines = append(lines, addrLines("eth0", p.NodeAddrs(n), lan)...)
	return append(lines, nodeRoutes(p, n)...)
}
