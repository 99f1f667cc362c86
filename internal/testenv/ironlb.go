package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// RepoRoot is the checkout's root directory (the one that holds e2e/).
func RepoRoot() (string, error) {
	e2e, err := findE2EModule()
	if err != nil {
		return "", err
	}
	return filepath.Dir(e2e), nil
}

// GoBuild builds the package pkg of the module in root into out.
func GoBuild(ctx context.Context, root, pkg, out string) error {
	return goBuild(ctx, root, out, pkg)
}

// GoBuildInto builds the main packages pkgs of the module in root into dir,
// each named after its package, in one go build: packages they share are
// compiled once, not once per binary at the same time.
func GoBuildInto(ctx context.Context, root, dir string, pkgs ...string) error {
	return goBuild(ctx, root, dir+string(filepath.Separator), pkgs...)
}

func goBuild(ctx context.Context, root, out string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates every CRD in deploy/crds and waits until each is established.
func InstallCRDs(ctx context.Context, cfg *rest.Config) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(root, "deploy", "crds", "ironlb.io_*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRDs in deploy/crds: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := dyn.Resource(crdResource).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD from %s: %w", filepath.Base(f), err)
		}
		if err := WaitEstablished(ctx, dyn, obj.GetName()); err != nil {
			return err
		}
	}
	return nil
}

// WaitEstablished waits until the CRD name is established (its API is served).
func WaitEstablished(ctx context.Context, dyn dynamic.Interface, name string) error {
	err := wait.PollUntilContextTimeout(ctx, pollPeriod, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

// Process is a program under test (ironlb-ccm), run like the upstream children: in its own
// process group, dying with this process, output appended to a log file.
type Process struct{ c *child }

// StartProcess runs bin with args, logging to logPath.
func StartProcess(name, bin, logPath string, args ...string) (*Process, error) {
	c, err := startChild(name, bin, logPath, false, args...)
	if err != nil {
		return nil, err
	}
	return &Process{c: c}, nil
}

// StartDetached is StartProcess for a process that outlives this one, in a
// session of its own; whoever stops it later needs its Pid.
func StartDetached(name, bin, logPath string, args ...string) (*Process, error) {
	c, err := startChild(name, bin, logPath, true, args...)
	if err != nil {
		return nil, err
	}
	return &Process{c: c}, nil
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.c.name }

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.c.cmd.Process.Pid }

// LogPath is the file its output goes to.
func (p *Process) LogPath() string { return p.c.logPath }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool { return p.c.exited() }

// Signal sends sig and waits, bounded, for the process to exit; it is killed if it does not.
func (p *Process) Signal(sig syscall.Signal) {
	if p.c.exited() {
		return
	}
	_ = p.c.cmd.Process.Signal(sig)
	select {
	case <-p.c.done:
	case <-time.After(20 * time.Second):
		p.c.stop()
	}
}

// Stop kills the process.
func (p *Process) Stop() { p.c.stop() }

// Log returns the whole log so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.c.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string { return p.c.tail(n) }

// RSS is the process's resident memory in bytes, 0 if unknown.
func (p *Process) RSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
