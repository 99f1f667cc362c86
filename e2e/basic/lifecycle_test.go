package basic

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

// TestLabLifecycle: a second lab beside the package's one; after a crash
// (its processes killed, nothing cleaned up) up removes the leftovers and
// starts again; down then leaves no namespace, link, process or state, a
// second down finds nothing to complain about, and the other lab is untouched.
func TestLabLifecycle(t *testing.T) {
	f := framework.New(t)
	// Two ups, each building ironlb's binaries: on 2 busy cores each link
	// alone can take minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cfg := lab.Config{Name: "e2e-lifecycle", Nodes: 1, Attached: true}
	first, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Down(context.Background(), cfg.Name, "") })
	if first.Index == f.Index {
		t.Fatalf("second lab took the first one's slot %d", f.Index)
	}
	// A crash: kube-apiserver and kube-proxy die, nothing is taken down.
	for _, name := range []string{"kube-apiserver", "kube-proxy@node1"} {
		if err := first.Kill(name); err != nil {
			t.Fatal(err)
		}
	}
	old := first.Processes()

	second, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("up after a crash: %v", err)
	}
	for _, p := range old {
		if p.Alive() {
			t.Errorf("%s (pid %d) of the crashed run still runs", p.Name, p.Pid)
		}
	}
	if _, err := second.Client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); err != nil {
		t.Fatalf("the new lab's API server: %v", err)
	}

	procs := second.Processes()
	if err := second.Down(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.Alive() {
			t.Errorf("%s (pid %d) still runs after down", p.Name, p.Pid)
		}
	}
	if ns := lab.ExistingNamespaces(ctx, second.Plan); len(ns) != 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name(), second.Prefix()+"-") {
			t.Errorf("link %s left in the root namespace", l.Name())
		}
	}
	if _, err := os.Stat(second.Dir()); !os.IsNotExist(err) {
		t.Errorf("state directory %s left: %v", second.Dir(), err)
	}
	// Down is idempotent: what is gone already is no error.
	if err := second.Down(ctx); err != nil {
		t.Errorf("a second down of the same lab: %v", err)
	}
	if err := lab.Down(ctx, cfg.Name, ""); err != nil {
		t.Errorf("down by name of a lab that is gone: %v", err)
	}

	// The package's lab still works, and so do the root namespace's
	// unreachable routes that guard it.
	if ns := lab.ExistingNamespaces(ctx, f.Plan); len(ns) != len(f.Namespaces()) {
		t.Errorf("the other lab lost namespaces: has %v", ns)
	}
	for _, args := range [][]string{{"-4", "route", "show", "type", "unreachable"}, {"-6", "route", "show", "type", "unreachable"}} {
		out, err := lab.RootExec(ctx, "ip", args...)
		if err != nil || !strings.Contains(out, "172.31.0.0/16") && !strings.Contains(out, "fd31::/48") {
			t.Errorf("ip %v: %q %v: the lab ranges' unreachable route is gone", args, out, err)
		}
	}
}
