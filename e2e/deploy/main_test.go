// Package deploy proves deploy/ against a real API server: every manifest
// (kustomize and Helm) passes a server-side dry run, the CRDs and RBAC are
// the ones installed, and the components' identities can do what they need
// and no more.
package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/testenv"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{CCM: true, Speakers: true})
}

// run runs an upstream binary (kubectl, helm) from the repository root with
// the lab's admin kubeconfig and stdin from in.
func run(f *framework.F, name, in string, args ...string) (stdout, stderr string, err error) {
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
	home := filepath.Join(f.T.TempDir(), "helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+f.Kubeconfig, "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	cmd.Stdin = strings.NewReader(in)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// tool is run with the output in one string, for messages and searches.
func tool(f *framework.F, name, in string, args ...string) (string, error) {
	f.T.Helper()
	stdout, stderr, err := run(f, name, in, args...)
	return stdout + stderr, err
}

// dryRun applies source (-k DIR, or -f - with stdin) server-side in a dry run
// with kubectl's strict field validation, and checks that kubectl names every
// one of objs as applied. --force-conflicts: the lab applied deploy/default's
// RBAC and policy as field manager ironlb-lab, and another manager's apply of
// an atomic field with another value (the Helm chart's narrowed Secret Role)
// conflicts, as when a Helm release takes over an install made with kubectl.
func dryRun(f *framework.F, objs []*unstructured.Unstructured, stdin string, source ...string) string {
	f.T.Helper()
	args := append([]string{"apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts"}, source...)
	out, err := tool(f, "kubectl", stdin, args...)
	if err != nil {
		f.T.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		return out
	}
	for _, o := range objs {
		if want := lab.ResourceName(o) + " serverside-applied (server dry run)"; !strings.Contains(out, want) {
			f.T.Errorf("kubectl %s: no %q in\n%s", strings.Join(args, " "), want, out)
		}
	}
	return out
}
