// Package deploy proves deploy/ against a real API server: every manifest
// (kustomize and Helm) passes a server-side dry run, the CRDs and RBAC are
// the ones installed, and the components' identities can do what they need
// and no more.
package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/testenv"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{CCM: true, Speakers: true})
}

// tool runs an upstream binary (kubectl, helm) from the repository root
// with the lab's admin kubeconfig, stdin from in, and returns its combined
// output.
func tool(f *framework.F, name, in string, args ...string) (string, error) {
	f.T.Helper()
	bins, err := testenv.Binaries(f.Ctx, name)
	if err != nil {
		f.T.Fatal(err)
	}
	path := map[string]string{"kubectl": bins.Kubectl, "helm": bins.Helm}[name]
	root, err := testenv.RepoRoot()
	if err != nil {
		f.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.Ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+f.Kubeconfig, "HELM_CACHE_HOME="+filepath.Join(f.T.TempDir(), "helm"),
		"HELM_CONFIG_HOME="+filepath.Join(f.T.TempDir(), "helm"), "HELM_DATA_HOME="+filepath.Join(f.T.TempDir(), "helm"))
	cmd.Stdin = strings.NewReader(in)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
