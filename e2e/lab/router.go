package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

const frrDaemons = "/usr/lib/frr"

// routerConfig is FRR's bgpd configuration: eBGP with every node of the LAN,
// which connect to the router (it listens for them; it never dials), ECMP
// over them, and short timers so that a lab session comes up in a second.
// Every node is also a BFD peer (profile RouterBFDProfile of bfdd.conf): a
// node whose speaker runs BFD is dropped as a next hop within a second of
// its death; one that does not is kept on BGP alone, as routers do.
func (l *Lab) routerConfig() string {
	lan := l.LAN()
	return fmt.Sprintf(`frr defaults datacenter
hostname %[1]s-router
log stdout informational
!
router bgp %[2]d
 bgp router-id %[3]s
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 timers bgp 3 9
 neighbor nodes peer-group
 neighbor nodes remote-as external
 neighbor nodes timers connect 1
 neighbor nodes bfd profile %[6]s
 bgp listen range %[4]s peer-group nodes
 bgp listen range %[5]s peer-group nodes
 !
 address-family ipv4 unicast
  neighbor nodes activate
  maximum-paths 16
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor nodes activate
  maximum-paths 16
 exit-address-family
!
`, l.Prefix(), RouterASN, l.RouterLAN()[0], lan[0], lan[1], RouterBFDProfile)
}

// RouterBFDProfile is the router's BFD profile for the nodes: 300 ms both
// ways, three packets missed, ironlb's defaults (bfdd.conf).
const RouterBFDProfile = "nodes"

func (l *Lab) bfdConfig() string {
	return fmt.Sprintf(`hostname %s-router
log stdout informational
!
bfd
 profile %s
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
`, l.Prefix(), RouterBFDProfile)
}

func (l *Lab) frrDir() string { return filepath.Join(l.dir, "frr") }

// startRouter runs FRR's zebra, bfdd and bgpd in the router namespace, each
// with its own paths so that several labs (and a system FRR) never meet.
func (l *Lab) startRouter(ctx context.Context) error {
	dir := l.frrDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	uid, gid, err := frrUser()
	if err != nil {
		return err
	}
	files := map[string]string{
		"zebra.conf": fmt.Sprintf("hostname %s-router\nlog stdout informational\n", l.Prefix()),
		"bfdd.conf":  l.bfdConfig(),
		"bgpd.conf":  l.routerConfig(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			return err
		}
	}
	for _, f := range []string{".", "zebra.conf", "bfdd.conf", "bgpd.conf"} {
		if err := os.Chown(filepath.Join(dir, f), uid, gid); err != nil {
			return err
		}
	}
	common := func(daemon string) []string {
		return []string{
			"-N", l.Prefix(),
			"-i", filepath.Join(dir, daemon+".pid"),
			"--vty_socket", dir,
			"-z", filepath.Join(dir, "zserv.api"),
			"-f", filepath.Join(dir, daemon+".conf"),
			"-u", "frr", "-g", "frr",
		}
	}
	if _, err := l.start("frr-zebra", l.RouterNS(), filepath.Join(frrDaemons, "zebra"), common("zebra")...); err != nil {
		return err
	}
	if err := l.waitFile(ctx, "frr-zebra", filepath.Join(dir, "zserv.api"), 20*time.Second); err != nil {
		return fmt.Errorf("zebra: %w\n%s", err, l.Tail("frr-zebra", 20))
	}
	bfdd := append(common("bfdd"), "--bfdctl", filepath.Join(dir, "bfdd.sock"))
	if _, err := l.start("frr-bfdd", l.RouterNS(), filepath.Join(frrDaemons, "bfdd"), bfdd...); err != nil {
		return err
	}
	if err := l.waitFile(ctx, "frr-bfdd", filepath.Join(dir, "bfdd.vty"), 20*time.Second); err != nil {
		return fmt.Errorf("bfdd: %w\n%s", err, l.Tail("frr-bfdd", 20))
	}
	if _, err := l.start("frr-bgpd", l.RouterNS(), filepath.Join(frrDaemons, "bgpd"), common("bgpd")...); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if !l.Alive("frr-bgpd") {
			return false, fmt.Errorf("bgpd exited: %s", l.Tail("frr-bgpd", 20))
		}
		_, err := l.Vtysh(ctx, "show bgp summary json")
		return err == nil, nil
	})
}

func frrUser() (uid, gid int, err error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("FRR is not installed (apt-get install frr): %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// waitFile waits for the process called name to create path.
func (l *Lab) waitFile(ctx context.Context, name, path string, d time.Duration) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, d, true, func(context.Context) (bool, error) {
		if !l.Alive(name) {
			return false, fmt.Errorf("%s exited", name)
		}
		_, err := os.Stat(path)
		return err == nil, nil
	})
}

// Vtysh runs FRR commands on the lab's router and returns the output.
func (l *Lab) Vtysh(ctx context.Context, commands ...string) (string, error) {
	args := []string{"--vty_socket", l.frrDir()}
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	return Exec(ctx, l.RouterNS(), "vtysh", args...)
}

// ConfigureRouter applies configuration lines (as in `configure terminal`)
// to the router, e.g. a neighbour with a password for a BGP test.
func (l *Lab) ConfigureRouter(ctx context.Context, lines ...string) error {
	out, err := l.Vtysh(ctx, append([]string{"configure terminal"}, lines...)...)
	if err != nil {
		return err
	}
	// vtysh reports a rejected line on its output and still exits 0.
	if strings.Contains(out, "% ") {
		return fmt.Errorf("router rejected configuration: %s", strings.TrimSpace(out))
	}
	return nil
}

// Route is one route in the router's RIB.
type Route struct {
	Prefix   netip.Prefix
	Protocol string       // "bgp", "connected", "kernel", "static"
	Selected bool         // installed as the best route
	NextHops []netip.Addr // active next hops
	// Communities and the like are in the BGP table, see Vtysh("show bgp ... json").
}

// RouterRoutes reads the router's RIB for one family ("ip" or "ipv6") as
// FRR's JSON.
func (l *Lab) RouterRoutes(ctx context.Context, ipv6 bool) (map[netip.Prefix]Route, error) {
	cmd := "show ip route json"
	if ipv6 {
		cmd = "show ipv6 route json"
	}
	out, err := l.Vtysh(ctx, cmd)
	if err != nil {
		return nil, err
	}
	var raw map[string][]struct {
		Prefix   string `json:"prefix"`
		Protocol string `json:"protocol"`
		Selected bool   `json:"selected"`
		NextHops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("parse %q: %w", cmd, err)
	}
	routes := map[netip.Prefix]Route{}
	for key, entries := range raw {
		pfx, err := netip.ParsePrefix(key)
		if err != nil {
			continue
		}
		for _, e := range entries {
			r := Route{Prefix: pfx, Protocol: e.Protocol, Selected: e.Selected}
			for _, nh := range e.NextHops {
				if a, err := netip.ParseAddr(nh.IP); err == nil && nh.Active {
					r.NextHops = append(r.NextHops, a)
				}
			}
			if _, seen := routes[pfx]; !seen || r.Selected {
				routes[pfx] = r
			}
		}
	}
	return routes, nil
}

// RouterBFDPeers reads the router's BFD sessions: by peer address, the
// state bfdd reports ("up", "down", "init", "shutdown").
func (l *Lab) RouterBFDPeers(ctx context.Context) (map[netip.Addr]string, error) {
	out, err := l.Vtysh(ctx, "show bfd peers json")
	if err != nil {
		return nil, err
	}
	var raw []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("parse show bfd peers json %q: %w", out, err)
	}
	peers := map[netip.Addr]string{}
	for _, p := range raw {
		if a, err := netip.ParseAddr(p.Peer); err == nil {
			peers[a] = p.Status
		}
	}
	return peers, nil
}
