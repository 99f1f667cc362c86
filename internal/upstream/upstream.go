// Package upstream names the upstream binaries that the lab and the tests run
// (kube-apiserver, etcd, kube-proxy, kube-controller-manager, kubelet,
// kube-scheduler, kubectl, helm),
// the versions e2e/go.mod pins, and where they are cached once built.
//
// It needs nothing beyond the standard library, so that the prerequisite
// check (hack/prereq) can tell a warm cache from a cold one without compiling
// Kubernetes' libraries first.
package upstream

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Modules whose versions e2e/go.mod pins.
const (
	KubernetesModule = "k8s.io/kubernetes"
	EtcdModule       = "go.etcd.io/etcd/server/v3"
	HelmModule       = "helm.sh/helm/v4"
)

// Binary is one upstream binary and the package it is built from.
type Binary struct {
	Name string // file name in the cache, e.g. "kube-proxy"
	Pkg  string
}

// Binaries are every upstream binary, in the order they are listed to go build.
var Binaries = []Binary{
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"},
	{"etcd", "go.etcd.io/etcd/server/v3"},
	{"kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"},
	{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"},
	{"kubelet", "k8s.io/kubernetes/cmd/kubelet"},
	{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"},
	{"kubectl", "k8s.io/kubernetes/cmd/kubectl"},
	{"helm", "helm.sh/helm/v4/cmd/helm"},
}

// Lab are the binaries every lab runs. kubectl (for people looking around) is
// built only when no compatible one is installed, helm only for the tests.
var Lab = []string{"kube-apiserver", "etcd", "kube-proxy", "kube-controller-manager"}

// Nodes are what a lab of real nodes runs besides: a kubelet per node and
// the scheduler that places pods on them.
var Nodes = []string{"kubelet", "kube-scheduler"}

// Pinned reads the Kubernetes, etcd and Helm versions that goMod (e2e/go.mod)
// requires, so each version is written down once.
func Pinned(goMod string) (map[string]string, error) {
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
		case KubernetesModule, EtcdModule, HelmModule:
			pinned[f[0]] = f[1]
		}
	}
	for _, m := range []string{KubernetesModule, EtcdModule, HelmModule} {
		if pinned[m] == "" {
			return nil, fmt.Errorf("%s requires no %s", goMod, m)
		}
	}
	return pinned, nil
}

// CacheRoot is where every version's binaries are cached:
// $IRONLB_CACHE_DIR or, without that variable, os.UserCacheDir()/ironlb/upstream.
func CacheRoot() (string, error) {
	if dir := os.Getenv("IRONLB_CACHE_DIR"); dir != "" {
		return dir, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("binary cache: %w", err)
	}
	return filepath.Join(dir, "ironlb", "upstream"), nil
}

// CacheDir is the directory of the binaries built from the pinned versions by
// the Go toolchain goVersion (as `go env GOVERSION` says it).
func CacheDir(pinned map[string]string, goVersion string) (string, error) {
	root, err := CacheRoot()
	if err != nil {
		return "", err
	}
	key := fmt.Sprintf("kubernetes-%s_etcd-%s_helm-%s_%s", pinned[KubernetesModule], pinned[EtcdModule], pinned[HelmModule], goVersion)
	return filepath.Join(root, key), nil
}

// Missing lists the names of want that dir holds no binary of. Binaries are
// renamed into place whole, so existing means complete.
func Missing(dir string, want []string) []string {
	var missing []string
	for _, name := range want {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, name)
		}
	}
	return missing
}
