// Command prereq checks, before any build, everything make lab, make test and
// make bench need: the Debian packages of packages.txt, root, the kernel
// features the lab uses (network namespaces, veth, bridge, nftables), free
// disk where the build caches live, and the Go version go.mod asks for.
//
// As root on Debian or Ubuntu it installs missing packages with apt-get,
// saying so. Elsewhere, or with IRONLB_PREREQ_INSTALL=no, it prints what is
// missing and the command that fixes it, and exits 1.
//
// IRONLB_PREREQ_PRETEND_MISSING=frr,ndisc6 makes the first look find those
// packages missing, so that a test can see what a fresh machine sees.
//
//	go run ./hack/prereq [-for "make lab"]
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/internal/upstream"
)

//go:embed packages.txt
var packagesTxt string

func main() {
	target := flag.String("for", "make lab, make test and make bench", "what the check is for, as the messages name it")
	flag.Parse()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	problems, notes := check(ctx, *target)
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "prereq: %s cannot run here yet:\n", *target)
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "  - %s\n    fix: %s\n", p.What, p.Fix)
		}
		fmt.Fprintf(os.Stderr, "prereq: nothing was built; checked in %.1fs\n", time.Since(began).Seconds())
		os.Exit(1)
	}
	fmt.Printf("prereq: ready for %s (%s) in %.1fs\n", *target, strings.Join(notes, "; "), time.Since(began).Seconds())
}

// check runs every check and returns what stops the target, and what was
// found fine.
func check(ctx context.Context, target string) (problems []Problem, notes []string) {
	add := func(p *Problem) {
		if p != nil {
			problems = append(problems, *p)
		}
	}
	root, err := repoRoot()
	if err != nil {
		return []Problem{{What: err.Error(), Fix: "run it from the ironlb checkout"}}, nil
	}

	env, p := goEnv(ctx, root)
	add(p)
	if p == nil {
		add(checkGo(root, env["GOVERSION"]))
		notes = append(notes, env["GOVERSION"])
	}

	isRoot := os.Geteuid() == 0
	if !isRoot {
		add(&Problem{What: target + " need root: the lab builds network namespaces, links and nftables rules", Fix: "run it as root, e.g. sudo " + strings.TrimPrefix(strings.Split(target, ",")[0], "sudo ")})
	}

	pkgs, err := parsePackages(packagesTxt)
	if err != nil {
		return append(problems, Problem{What: err.Error(), Fix: "correct hack/prereq/packages.txt"}), notes
	}
	add(ensurePackages(ctx, pkgs, isRoot))
	if len(problems) == 0 || isRoot {
		notes = append(notes, fmt.Sprintf("%d Debian packages", len(pkgs)))
	}

	if isRoot && findProbe("ip") != "" {
		kp := checkKernel(ctx)
		add(kp)
		if kp == nil {
			notes = append(notes, "kernel: netns, veth, bridge, nftables")
		}
	}

	if p == nil {
		dp, note := checkDisks(root, env)
		add(dp)
		notes = append(notes, note)
	}
	return problems, notes
}

// repoRoot is the checkout: where go.mod and e2e/go.mod are, found from the
// working directory up.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "e2e", "go.mod")); err == nil {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no ironlb checkout (e2e/go.mod) in %s or above", wd)
		}
	}
}

// goEnv asks the go command that the builds will use, in the e2e module
// whose toolchain builds the upstream binaries.
func goEnv(ctx context.Context, root string) (map[string]string, *Problem) {
	names := []string{"GOVERSION", "GOCACHE", "GOMODCACHE"}
	cmd := exec.CommandContext(ctx, "go", append([]string{"env"}, names...)...)
	cmd.Dir = filepath.Join(root, "e2e")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != len(names) {
		return nil, &Problem{What: fmt.Sprintf("go env: %v", err), Fix: "install Go from https://go.dev/dl/ and put its bin directory on the PATH"}
	}
	env := map[string]string{}
	for i, n := range names {
		env[n] = lines[i]
	}
	return env, nil
}

// checkGo compares the toolchain with the go lines of both modules.
func checkGo(root, have string) *Problem {
	for _, mod := range []string{"go.mod", "e2e/go.mod"} {
		data, err := os.ReadFile(filepath.Join(root, mod))
		if err != nil {
			return &Problem{What: err.Error(), Fix: "run it from a complete ironlb checkout"}
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "go" && !goVersionAtLeast(have, f[1]) {
				return &Problem{
					What: fmt.Sprintf("%s needs Go %s or newer; the go command is %s", mod, f[1], have),
					Fix:  fmt.Sprintf("install Go %s or newer from https://go.dev/dl/ (or unset GOTOOLCHAIN=local, so that go fetches it)", f[1]),
				}
			}
		}
	}
	return nil
}

// ensurePackages finds missing packages and, as root on Debian or Ubuntu,
// installs them; otherwise it returns the problem with its fix.
func ensurePackages(ctx context.Context, pkgs []Package, isRoot bool) *Problem {
	pretend := strings.FieldsFunc(os.Getenv("IRONLB_PREREQ_PRETEND_MISSING"), func(r rune) bool { return r == ',' || r == ' ' })
	h := Host{
		Root:     isRoot,
		Apt:      findProbe("apt-get") != "",
		AptLists: aptListsPresent(),
		Install:  os.Getenv("IRONLB_PREREQ_INSTALL") != "no",
		Missing:  missing(pkgs, pretend),
	}
	install, p := decidePackages(h)
	if len(install) == 0 {
		return p
	}
	fmt.Fprintf(os.Stderr, "prereq: installing the missing Debian packages %s\n", strings.Join(install, " "))
	err := aptGet(ctx, h.AptLists, install)
	// Look again for real, also for what the pretence hid.
	h.Missing, h.Install = missing(pkgs, nil), false
	if _, p := decidePackages(h); p != nil {
		if err != nil {
			p.What += fmt.Sprintf(" (apt-get failed: %v)", err)
		}
		return p
	}
	return nil
}

// aptGet installs pkgs, running apt-get update first when no package list
// was ever fetched, or when the install fails on stale lists.
func aptGet(ctx context.Context, lists bool, pkgs []string) error {
	run := func(args ...string) error {
		fmt.Fprintf(os.Stderr, "prereq: apt-get %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	install := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	if !lists {
		if err := run("update", "-q"); err != nil {
			return err
		}
		return run(install...)
	}
	if err := run(install...); err == nil {
		return nil
	}
	if err := run("update", "-q"); err != nil {
		return err
	}
	return run(install...)
}

// aptListsPresent says whether apt-get update has fetched package lists.
func aptListsPresent() bool {
	lists, _ := filepath.Glob("/var/lib/apt/lists/*_Packages*")
	return len(lists) > 0
}

// missing lists the packages whose probe is not found, and those pretend names.
func missing(pkgs []Package, pretend []string) []Package {
	var out []Package
	for _, p := range pkgs {
		if slices.Contains(pretend, p.Name) || findProbe(p.Probe) == "" {
			out = append(out, p)
		}
	}
	return out
}

// findProbe finds a command on the PATH or in the sbin directories (which a
// user's PATH may lack), or checks an absolute path.
func findProbe(probe string) string {
	if filepath.IsAbs(probe) {
		if _, err := os.Stat(probe); err == nil {
			return probe
		}
		return ""
	}
	if path, err := exec.LookPath(probe); err == nil {
		return path
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if fi, err := os.Stat(filepath.Join(dir, probe)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return filepath.Join(dir, probe)
		}
	}
	return ""
}

// checkKernel makes what the lab makes, in a throwaway network namespace of
// its own: a veth pair, a bridge with a port, an nftables table. Nothing of it
// touches the root namespace, and the namespace goes at the end.
func checkKernel(ctx context.Context) *Problem {
	ns := fmt.Sprintf("ilb-prereq-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	run := func(name string, args ...string) error {
		out, err := exec.CommandContext(ctx, findProbe(name), args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	ip := func(args ...string) error { return run("ip", args...) }
	removeStaleNamespaces(ctx)
	if err := ip("netns", "add", ns); err != nil {
		return &Problem{What: "network namespaces do not work: " + err.Error(), Fix: "use a kernel with CONFIG_NET_NS (every distribution kernel has it) and run as root outside a restricted container"}
	}
	defer ip("netns", "del", ns)
	steps := []struct {
		feature, module string
		args            []string
	}{
		{"veth", "veth", []string{"-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"}},
		{"bridge", "bridge", []string{"-n", ns, "link", "add", "br0", "type", "bridge"}},
		{"bridge", "bridge", []string{"-n", ns, "link", "set", "p0", "master", "br0"}},
	}
	for _, s := range steps {
		if err := ip(s.args...); err != nil {
			return &Problem{What: s.feature + " links do not work: " + err.Error(), Fix: "modprobe " + s.module}
		}
	}
	if nft := findProbe("nft"); nft != "" {
		if err := ip("netns", "exec", ns, nft, "add", "table", "inet", "ilbprereq"); err != nil {
			return &Problem{What: "nftables does not work: " + err.Error(), Fix: "modprobe nf_tables"}
		}
	}
	return nil
}

// removeStaleNamespaces deletes the throwaway namespaces of checks that were
// killed before they could.
func removeStaleNamespaces(ctx context.Context) {
	ip := findProbe("ip")
	out, err := exec.CommandContext(ctx, ip, "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "ilb-prereq-") {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(strings.TrimPrefix(f[0], "ilb-prereq-"), &pid); err != nil {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.CommandContext(ctx, ip, "netns", "del", f[0]).Run()
		}
	}
}

// checkDisks checks the free space where the Go build cache, the module cache
// and the upstream binaries' cache live: plenty when the upstream binaries
// still have to be built, little when the cache has them.
func checkDisks(root string, env map[string]string) (*Problem, string) {
	warm := false
	if pinned, err := upstream.Pinned(filepath.Join(root, "e2e", "go.mod")); err == nil {
		if dir, err := upstream.CacheDir(pinned, env["GOVERSION"]); err == nil {
			warm = len(upstream.Missing(dir, append(upstream.Lab, upstream.Nodes...))) == 0
		}
	}
	cacheRoot, err := upstream.CacheRoot()
	if err != nil {
		return &Problem{What: err.Error(), Fix: "set HOME or IRONLB_CACHE_DIR"}, ""
	}
	need := diskNeed(warm)
	seen := map[uint64]bool{}
	least := uint64(1<<64 - 1)
	for _, path := range []string{env["GOCACHE"], env["GOMODCACHE"], cacheRoot} {
		if path == "" || path == "off" {
			continue
		}
		var st syscall.Statfs_t
		dev, err := statfsExisting(path, &st)
		if err != nil || seen[dev] {
			continue
		}
		seen[dev] = true
		free := st.Bavail * uint64(st.Bsize)
		least = min(least, free)
		if p := checkDisk(path, free, need, warm); p != nil {
			return p, ""
		}
	}
	state := "cold: the upstream binaries will be built"
	if warm {
		state = "warm: the upstream binaries are cached"
	}
	return nil, fmt.Sprintf("disk: %.0f GiB free where the caches live, %s", float64(least)/gib, state)
}

// statfsExisting stats the filesystem of path, or of its nearest existing
// parent, and returns its device.
func statfsExisting(path string, st *syscall.Statfs_t) (uint64, error) {
	for p := path; ; p = filepath.Dir(p) {
		var s syscall.Stat_t
		if err := syscall.Stat(p, &s); err == nil {
			return s.Dev, syscall.Statfs(p, st)
		}
		if p == filepath.Dir(p) {
			return 0, fmt.Errorf("no existing parent of %s", path)
		}
	}
}
