package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

// Bins holds the paths of the upstream binaries built from the e2e module.
type Bins struct {
	KubeAPIServer         string
	Etcd                  string
	KubeProxy             string
	KubeControllerManager string
	Kubelet               string
	KubeScheduler         string
	Kubectl               string
	Helm                  string

	// Dir is the cache directory that holds them.
	Dir string
	// Built names the binaries this call built; none when the cache had
	// every binary asked for.
	Built []string
}

// Reused is the one line to print when Binaries found every binary of
// names in the cache, and "" when it built any.
func (b Bins) Reused(names []string) string {
	if len(b.Built) > 0 {
		return ""
	}
	return fmt.Sprintf("upstream: reusing the cached %s from %s (no build)", strings.Join(names, ", "), b.Dir)
}

// path is where b keeps the path of the binary called name.
func (b *Bins) path(name string) *string {
	switch name {
	case "kube-apiserver":
		return &b.KubeAPIServer
	case "etcd":
		return &b.Etcd
	case "kube-proxy":
		return &b.KubeProxy
	case "kube-controller-manager":
		return &b.KubeControllerManager
	case "kubelet":
		return &b.Kubelet
	case "kube-scheduler":
		return &b.KubeScheduler
	case "kubectl":
		return &b.Kubectl
	case "helm":
		return &b.Helm
	}
	panic("testenv: no upstream binary " + name)
}

const (
	versionPkg = "k8s.io/component-base/version"

	// lockWait bounds how long Binaries waits for another process that is
	// building the same binaries; a cold build takes minutes on 2 cores.
	lockWait = 40 * time.Minute
)

// Binaries returns the paths of the upstream kube-apiserver, etcd, kube-proxy,
// kube-controller-manager, kubelet, kube-scheduler, kubectl and helm, built from the versions pinned in e2e/go.mod.
// Only the binaries named in want (by file name, e.g. "kube-proxy") are built
// if missing; with no want, kube-apiserver and etcd, which is all a control
// plane for integration tests needs.
//
// They are cached in upstream.CacheDir: $IRONLB_CACHE_DIR/<key>/ or, without
// that variable, os.UserCacheDir()/ironlb/upstream/<key>/, where the key names
// the Kubernetes, etcd, Helm and Go versions. A cache hit costs a few stat
// calls and one `go env`. A miss builds what is missing under an exclusive
// lock on the cache directory, so test packages running in parallel build
// them once, and reports its progress on stderr.
func Binaries(ctx context.Context, want ...string) (Bins, error) {
	if len(want) == 0 {
		want = []string{"kube-apiserver", "etcd"}
	}
	e2eDir, pinned, dir, err := cache(ctx)
	if err != nil {
		return Bins{}, err
	}

	bins := Bins{Dir: dir}
	for _, u := range upstream.Binaries {
		*bins.path(u.Name) = filepath.Join(dir, u.Name)
	}
	if len(upstream.Missing(dir, want)) == 0 {
		return bins, nil
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Bins{}, fmt.Errorf("create binary cache: %w", err)
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return Bins{}, err
	}
	defer unlock()

	// Another process may have built them while this one waited for the lock.
	missing := upstream.Missing(dir, want)
	if len(missing) == 0 {
		return bins, nil
	}
	if err := build(ctx, e2eDir, dir, pinned, missing); err != nil {
		return Bins{}, err
	}
	bins.Built = missing
	return bins, nil
}

// CacheDir is the directory that holds, or will hold, the upstream binaries
// of the pinned versions.
func CacheDir(ctx context.Context) (string, error) {
	_, _, dir, err := cache(ctx)
	return dir, err
}

// cache finds the e2e module, its pinned versions and their cache directory.
func cache(ctx context.Context) (e2eDir string, pinned map[string]string, dir string, err error) {
	if e2eDir, err = findE2EModule(); err != nil {
		return "", nil, "", err
	}
	if pinned, err = upstream.Pinned(filepath.Join(e2eDir, "go.mod")); err != nil {
		return "", nil, "", err
	}
	goVersion, err := goEnv(ctx, e2eDir, "GOVERSION")
	if err != nil {
		return "", nil, "", err
	}
	dir, err = upstream.CacheDir(pinned, goVersion)
	return e2eDir, pinned, dir, err
}

// findE2EModule walks up from the working directory to the checkout's e2e
// module, so tests (run in their package directory) and tools run from the
// repository root both find it.
func findE2EModule() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir, i := wd, 0; i < 64; dir, i = filepath.Dir(dir), i+1 {
		if _, err := os.Stat(filepath.Join(dir, "e2e", "go.mod")); err == nil {
			return filepath.Join(dir, "e2e"), nil
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	return "", fmt.Errorf("no e2e/go.mod in %s or its parents", wd)
}

// goEnv asks the go command that will build the binaries, which may differ
// from the one that built this test when GOTOOLCHAIN selects another.
func goEnv(ctx context.Context, dir, name string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", name)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// lockDir takes an exclusive flock on dir/.lock. It polls instead of blocking
// so that ctx can end the wait, and says once that it waits.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock binary cache: %w", err)
	}
	const poll = time.Second
	deadline := time.Now().Add(lockWait)
	for i := 0; i < int(lockWait/poll); i++ {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		if i == 0 {
			fmt.Fprintf(os.Stderr, "upstream: another process is building into %s; waiting for it (at most %s)\n", dir, lockWait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock on %s: %w", dir, ctx.Err())
		case <-time.After(poll):
		}
	}
	f.Close()
	return nil, fmt.Errorf("lock %s (held by another build for over %s?): %w", dir, lockWait, err)
}

// build compiles the binaries called names from the e2e module into a
// scratch directory beside the cache and renames each into place. A cold
// build compiles thousands of packages for many minutes, so it counts them
// on stderr as go build -v names them, against the total from go list -deps.
func build(ctx context.Context, e2eDir, dir string, pinned map[string]string, names []string) error {
	// Holding the lock, any scratch directory left is from a build that died.
	if old, _ := filepath.Glob(filepath.Join(dir, ".build-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return fmt.Errorf("build upstream binaries: %w", err)
	}
	defer os.RemoveAll(tmp)

	kubeVersion := pinned[upstream.KubernetesModule]
	major, minor, ok := majorMinor(kubeVersion)
	if !ok {
		return fmt.Errorf("kubernetes version %q is not vMAJOR.MINOR.PATCH", kubeVersion)
	}
	var bins []upstream.Binary
	var pkgs []string
	for _, u := range upstream.Binaries {
		if slices.Contains(names, u.Name) {
			bins = append(bins, u)
			pkgs = append(pkgs, u.Pkg)
		}
	}

	p := newBuildProgress(os.Stderr, isTerminal(os.Stderr), bins)
	fmt.Fprintf(os.Stderr, "upstream: building %s (Kubernetes %s, etcd %s, helm %s) into %s; from a cold cache this takes about %s on 2 cores\n",
		strings.Join(names, ", "), kubeVersion, pinned[upstream.EtcdModule], pinned[upstream.HelmModule], dir, coldBuildTime)
	stopTicker := p.run(tmp)
	defer stopTicker()

	deps, err := listDeps(ctx, e2eDir, pkgs, p)
	if err != nil {
		return err
	}
	p.setDeps(deps)

	args := append([]string{
		"build", "-C", e2eDir, "-v", "-trimpath", "-o", tmp + string(filepath.Separator),
		"-ldflags", buildLDFlags(kubeVersion, major, minor),
	}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// go build -v names each package on stderr as it compiles it; every
	// other line (errors, downloads) is kept for the error message.
	var other bytes.Buffer
	cmd.Stdout = &other
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if !p.compiled(sc.Text()) {
			other.WriteString(sc.Text() + "\n")
		}
	}
	if err := cmd.Wait(); err != nil {
		stopTicker()
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(other.Bytes(), 30))
	}

	for _, u := range bins {
		// go build names a binary after its package path, less a major
		// version suffix: go.etcd.io/etcd/server/v3 becomes "server".
		built := filepath.Join(tmp, binaryName(u.Pkg))
		if err := os.Rename(built, filepath.Join(dir, u.Name)); err != nil {
			return fmt.Errorf("install %s: %w", u.Name, err)
		}
	}
	stopTicker()
	goCache, _ := goEnv(ctx, e2eDir, "GOCACHE")
	fmt.Fprint(os.Stderr, p.summary(dir, goCache))
	return nil
}

// coldBuildTime is what a cold build took on 2 cores: idle, and shared with
// other builds (see the README).
const coldBuildTime = "20 to 40 minutes"

// listDeps returns, for each package, the packages it is built from
// (itself included), as go list -deps sees them with the build's settings.
// On a cold module cache go list downloads every module first; the progress
// counts them.
func listDeps(ctx context.Context, e2eDir string, pkgs []string, p *buildProgress) (map[string][]string, error) {
	args := append([]string{"list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = e2eDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, other bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "go: downloading ") {
			p.downloaded()
			continue
		}
		other.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(other.Bytes(), 30))
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			deps[f[0]] = f
		}
	}
	return deps, nil
}

func buildLDFlags(version string, major, minor int) string {
	return fmt.Sprintf("-s -w -X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]d -X %[1]s.gitMinor=%[4]d",
		versionPkg, version, major, minor)
}

func binaryName(pkg string) string {
	base := filepath.Base(pkg)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		return filepath.Base(filepath.Dir(pkg))
	}
	return base
}
