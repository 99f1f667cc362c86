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
)

// Bins holds the paths of the upstream binaries built from the e2e module.
type Bins struct {
	KubeAPIServer         string
	Etcd                  string
	KubeProxy             string
	KubeControllerManager string
	Kubectl               string
	Helm                  string
}

// upstream names the binaries and the packages they are built from, in the
// e2e module's tool directives.
var upstream = []struct {
	name string
	pkg  string
	path func(*Bins) *string
}{
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", func(b *Bins) *string { return &b.KubeAPIServer }},
	{"etcd", "go.etcd.io/etcd/server/v3", func(b *Bins) *string { return &b.Etcd }},
	{"kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy", func(b *Bins) *string { return &b.KubeProxy }},
	{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager", func(b *Bins) *string { return &b.KubeControllerManager }},
	{"kubectl", "k8s.io/kubernetes/cmd/kubectl", func(b *Bins) *string { return &b.Kubectl }},
	{"helm", "helm.sh/helm/v4/cmd/helm", func(b *Bins) *string { return &b.Helm }},
}

const (
	kubernetesModule = "k8s.io/kubernetes"
	etcdModule       = "go.etcd.io/etcd/server/v3"
	helmModule       = "helm.sh/helm/v4"
	versionPkg       = "k8s.io/component-base/version"

	// lockWait bounds how long Binaries waits for another process that is
	// building the same binaries; a cold build takes minutes on 2 cores.
	lockWait = 40 * time.Minute
)

// Binaries returns the paths of the upstream kube-apiserver, etcd, kube-proxy,
// kube-controller-manager, kubectl and helm, built from the versions pinned in e2e/go.mod.
// Only the binaries named in want (by file name, e.g. "kube-proxy") are built
// if missing; with no want, kube-apiserver and etcd, which is all a control
// plane for integration tests needs.
//
// They are cached in $IRONLB_CACHE_DIR/<key>/ or, without that variable, in
// os.UserCacheDir()/ironlb/upstream/<key>/, where the key names the
// Kubernetes, etcd and Go versions. A cache hit costs a few stat calls and one
// `go env`. A miss builds what is missing under an exclusive lock on the cache
// directory, so test packages running in parallel build them once.
func Binaries(ctx context.Context, want ...string) (Bins, error) {
	if len(want) == 0 {
		want = []string{"kube-apiserver", "etcd"}
	}
	e2eDir, err := findE2EModule()
	if err != nil {
		return Bins{}, err
	}
	pinned, err := pinnedVersions(filepath.Join(e2eDir, "go.mod"))
	if err != nil {
		return Bins{}, err
	}
	goVersion, err := goEnv(ctx, e2eDir, "GOVERSION")
	if err != nil {
		return Bins{}, err
	}
	kubeVersion := pinned[kubernetesModule]
	dir, err := cacheDir(fmt.Sprintf("kubernetes-%s_etcd-%s_helm-%s_%s", kubeVersion, pinned[etcdModule], pinned[helmModule], goVersion))
	if err != nil {
		return Bins{}, err
	}

	var bins Bins
	for _, u := range upstream {
		*u.path(&bins) = filepath.Join(dir, u.name)
	}
	if missing := missingBinaries(bins, want); len(missing) == 0 {
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
	missing := missingBinaries(bins, want)
	if len(missing) == 0 {
		return bins, nil
	}
	if err := build(ctx, e2eDir, dir, kubeVersion, missing); err != nil {
		return Bins{}, err
	}
	return bins, nil
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

// pinnedVersions reads the Kubernetes, etcd and Helm versions that e2e/go.mod
// requires, so each version is written down once.
func pinnedVersions(goMod string) (map[string]string, error) {
	data, err := os.ReadFile(goMod)
	if err != nil {
		return nil, fmt.Errorf("read pinned versions: %w", err)
	}
	pinned := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "=>") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) < 2 || !strings.HasPrefix(f[1], "v") {
			continue
		}
		switch f[0] {
		case kubernetesModule, etcdModule, helmModule:
			pinned[f[0]] = f[1]
		}
	}
	for _, m := range []string{kubernetesModule, etcdModule, helmModule} {
		if pinned[m] == "" {
			return nil, fmt.Errorf("%s requires no %s", goMod, m)
		}
	}
	return pinned, nil
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

func cacheDir(key string) (string, error) {
	if dir := os.Getenv("IRONLB_CACHE_DIR"); dir != "" {
		return filepath.Join(dir, key), nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("binary cache: %w", err)
	}
	return filepath.Join(dir, "ironlb", "upstream", key), nil
}

// missingBinaries lists the packages of want whose binary is not in the cache yet.
// Binaries are renamed into place whole, so existing means complete.
func missingBinaries(bins Bins, want []string) []string {
	var missing []string
	for _, u := range upstream {
		if !slices.Contains(want, u.name) {
			continue
		}
		if fi, err := os.Stat(*u.path(&bins)); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, u.pkg)
		}
	}
	return missing
}

// lockDir takes an exclusive flock on dir/.lock. It polls instead of blocking
// so that ctx can end the wait.
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

// build compiles pkgs from the e2e module into a scratch directory beside the
// cache and renames each binary into place.
func build(ctx context.Context, e2eDir, dir, kubeVersion string, pkgs []string) error {
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

	major, minor, err := majorMinor(kubeVersion)
	if err != nil {
		return err
	}
	args := append([]string{
		"build", "-C", e2eDir, "-trimpath", "-o", tmp + string(filepath.Separator),
		"-ldflags", buildLDFlags(kubeVersion, major, minor),
	}, pkgs...)
	// A cold build takes minutes; say why nothing seems to happen.
	fmt.Fprintf(os.Stderr, "testenv: building %s into %s\n", strings.Join(pkgs, " "), dir)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(out.Bytes(), 30))
	}

	for _, u := range upstream {
		if !slices.Contains(pkgs, u.pkg) {
			continue
		}
		// go build names a binary after its package path, less a major
		// version suffix: go.etcd.io/etcd/server/v3 becomes "server".
		built := filepath.Join(tmp, binaryName(u.pkg))
		if err := os.Rename(built, filepath.Join(dir, u.name)); err != nil {
			return fmt.Errorf("install %s: %w", u.name, err)
		}
	}
	return nil
}

func buildLDFlags(version, major, minor string) string {
	return fmt.Sprintf("-s -w -X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]s -X %[1]s.gitMinor=%[4]s",
		versionPkg, version, major, minor)
}

func majorMinor(version string) (major, minor string, err error) {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return "", "", fmt.Errorf("kubernetes version %q is not vMAJOR.MINOR.PATCH", version)
	}
	return parts[0], parts[1], nil
}

func binaryName(pkg string) string {
	base := filepath.Base(pkg)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		return filepath.Base(filepath.Dir(pkg))
	}
	return base
}
