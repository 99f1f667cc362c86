package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPinned_ReadsTheThreeVersionsOfE2EGoMod(t *testing.T) {
	pinned, err := Pinned(filepath.Join("..", "..", "e2e", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{KubernetesModule, EtcdModule, HelmModule} {
		if !strings.HasPrefix(pinned[m], "v") {
			t.Errorf("%s pinned at %q", m, pinned[m])
		}
	}
	goMod := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(goMod, []byte("module x\nrequire k8s.io/kubernetes v1.37.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pinned(goMod); err == nil {
		t.Error("a go.mod without etcd and helm gave versions")
	}
}

func TestCacheDir_KeyNamesEveryVersionAndMissingSaysWhatIsNotBuilt(t *testing.T) {
	root := t.TempDir()
	t.Setenv("IRONLB_CACHE_DIR", root)
	dir, err := CacheDir(map[string]string{KubernetesModule: "v1.37.1", EtcdModule: "v3.7.0", HelmModule: "v4.3.1"}, "go1.26.8")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "kubernetes-v1.37.1_etcd-v3.7.0_helm-v4.3.1_go1.26.8"); dir != want {
		t.Fatalf("cache dir %s, want %s", dir, want)
	}
	if err := os.MkdirAll(filepath.Join(dir, "kubectl"), 0o755); err != nil { // a directory is no binary
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etcd"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(Missing(dir, []string{"etcd", "kubectl", "helm"}), " "); got != "kubectl helm" {
		t.Errorf("missing %q, want \"kubectl helm\"", got)
	}
}
