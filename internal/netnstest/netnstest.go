// Package netnstest is the machinery shared by tests that run real network
// code in Linux network namespaces (speaker/l2 and speaker/bgp): a pair of
// namespaces joined by a veth pair and removed when the test ends, bounded
// commands, bounded waits, and a helper process, a copy of the test binary
// started inside a namespace with `ip netns exec` and steered through a file
// the test rewrites atomically.
//
// A test that uses it must run as root and fails, not skips, otherwise.
// Every namespace and link it creates is named <prefix>-<pid>-<suffix>, the
// prefix being the calling package's own (ilbt for speaker/l2, ilbb for
// speaker/bgp), and only those are ever deleted. Each package keeps to its
// own addresses too: speaker/l2 172.31.248.0/24 and fd31:0:0:f80::/64,
// speaker/bgp 172.31.249.0/24 and fd31:0:0:f90::/64.
package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CommandTimeout bounds every command Run runs.
const CommandTimeout = 30 * time.Second

// Run runs a command, bounded by CommandTimeout, and returns its combined
// output.
func Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// IP runs ip with args and returns its output; it fails t if ip fails.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Run("ip", args...)
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Sysctl sets key to value in namespace ns, or fails t.
func Sysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	IP(t, "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
}

// RequireRoot fails t (it does not skip it) unless it runs as root. pkg is
// the package to name in the hint, e.g. ./speaker/l2/.
func RequireRoot(t testing.TB, pkg string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates network namespaces and must run as root (sudo go test %s)", pkg)
	}
}

// RequireTools fails t unless every tool is found (on PATH, or as a path).
// packages names the Debian packages they come from, for the message.
func RequireTools(t testing.TB, packages string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s (Debian packages %s): %v", tool, packages, err)
		}
	}
}

// Side describes one end of a veth pair.
type Side struct {
	// Suffix names the namespace <prefix>-<pid>-<Suffix>; the end of the
	// veth pair in it is <prefix>-<pid>-<Suffix>l.
	Suffix string
	// MAC is the link's hardware address; "" leaves it to the kernel.
	MAC string
	// Addrs are the link's addresses with their prefix lengths; IPv6 ones
	// are added without duplicate address detection.
	Addrs []string
}

// End is one end of a veth pair VethPair made: a namespace and the link in
// it.
type End struct {
	NS, Link string
}

// VethPair creates two namespaces, a and b, with loopback up and duplicate
// address detection off, joins them with a veth pair (created in a, the
// other end moved to b), adds the addresses and sets the links up. The
// namespaces, and the veth pair with them, are deleted when t ends.
func VethPair(t testing.TB, prefix string, a, b Side) (End, End) {
	t.Helper()
	pid := os.Getpid()
	ends := [2]End{}
	for i, s := range []Side{a, b} {
		ends[i] = End{NS: fmt.Sprintf("%s-%d-%s", prefix, pid, s.Suffix), Link: fmt.Sprintf("%s-%d-%sl", prefix, pid, s.Suffix)}
		if len(ends[i].Link) > 15 {
			t.Fatalf("link name %s longer than Linux allows (15)", ends[i].Link)
		}
	}
	for _, e := range ends {
		IP(t, "netns", "add", e.NS)
		t.Cleanup(func() {
			// The veth pair goes with the namespaces.
			if out, err := Run("ip", "netns", "del", e.NS); err != nil {
				t.Errorf("deleting namespace %s: %v\n%s", e.NS, err, out)
			}
		})
		// Before the link exists, so that it is never tentative.
		Sysctl(t, e.NS, "net.ipv6.conf.all.accept_dad", "0")
		Sysctl(t, e.NS, "net.ipv6.conf.default.accept_dad", "0")
		IP(t, "-n", e.NS, "link", "set", "lo", "up")
	}
	args := []string{"-n", ends[0].NS, "link", "add", ends[0].Link}
	if a.MAC != "" {
		args = append(args, "address", a.MAC)
	}
	args = append(args, "type", "veth", "peer", "name", ends[1].Link)
	if b.MAC != "" {
		args = append(args, "address", b.MAC)
	}
	IP(t, append(args, "netns", ends[1].NS)...)
	for i, s := range []Side{a, b} {
		for _, addr := range s.Addrs {
			args := []string{"-n", ends[i].NS, "addr", "add", addr, "dev", ends[i].Link}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			IP(t, args...)
		}
		IP(t, "-n", ends[i].NS, "link", "set", ends[i].Link, "up")
	}
	return ends[0], ends[1]
}

// Poll checks cond every 50ms until it holds (true) or timeout passes
// (false).
func Poll(timeout time.Duration, cond func() bool) bool {
	return poll(timeout, 50*time.Millisecond, cond)
}

// WaitFor checks cond every 100ms until it holds, and fails t if it does
// not within timeout. what names the wait and cond's string describes what
// it saw, for the failure message.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var seen string
	if !poll(timeout, 100*time.Millisecond, func() bool {
		var ok bool
		ok, seen = cond()
		return ok
	}) {
		t.Fatalf("%s: not within %v; last seen: %s", what, timeout, seen)
	}
}

// poll checks cond every interval until it holds or timeout passes; the
// last check is after the timeout.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// WriteFileAtomic replaces the file at path with b: it writes a temporary
// file next to it and renames that, so that a reader sees the old content
// or the new, never a part.
func WriteFileAtomic(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
