// Package lab runs a bare-metal Kubernetes cluster in network namespaces:
// a real kube-apiserver, kube-controller-manager and etcd in the root
// namespace, nodes with a real kube-proxy each, a LAN client, and an FRR
// router in front of an external client network. The Plan type documents
// the addresses.
//
// Every process and namespace it makes is recorded in a state directory so
// that Down — from this process or another, also after a crash — removes
// exactly what the lab made, and nothing of another lab.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/internal/testenv"
)

// Config says what lab to bring up.
type Config struct {
	// Name identifies the lab: its state directory, and what Down takes.
	Name string
	// Nodes is the number of nodes (default 3).
	Nodes int
	// SpeakerOnlyNodes are nodes after those that run only ironlb-speaker
	// (with Speakers): no kube-proxy, no endpoints (see scale.go).
	SpeakerOnlyNodes int
	// CCM runs ironlb-ccm against the lab's API server.
	CCM bool
	// CCMArgs are extra flags for ironlb-ccm.
	CCMArgs []string
	// Speakers runs ironlb-speaker on every node.
	Speakers bool
	// SpeakerArgs are extra flags for every ironlb-speaker.
	SpeakerArgs []string
	// APIServerArgs are extra kube-apiserver flags (e.g. an audit log).
	APIServerArgs []string
	// Kubelet makes the full nodes real (kubelet.go): a containerd and a
	// kubelet each, pods scheduled onto them. CCM and Speakers then install
	// ironlb from deploy/ unchanged, as pods of its Deployment and DaemonSet.
	Kubelet bool
	// Kubectl builds kubectl too (bin/kubectl in the state directory).
	Kubectl bool
	// Attached processes die with this process (tests); otherwise they run
	// on until Down (make lab).
	Attached bool
	// StateRoot is where labs keep their state (default DefaultStateRoot,
	// or $IRONLB_LAB_DIR).
	StateRoot string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// Lab is a running lab.
type Lab struct {
	Plan
	cfg   Config
	dir   string
	mu    sync.Mutex
	state *State

	// Kubeconfig is the admin kubeconfig's path.
	Kubeconfig string
	// RESTConfig is an admin client configuration.
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface

	bins binaries
	// images are the image archives real nodes import (Config.Kubelet).
	images []string
}

type binaries struct {
	testenv.Bins
	CCM     string
	Speaker string
	Echo    string
}

// Dir is the lab's state directory: state.json, kubeconfigs, logs/.
func (l *Lab) Dir() string { return l.dir }

// Name is the lab's name.
func (l *Lab) Name() string { return l.state.Name }

func (l *Lab) progress(format string, args ...any) {
	if l.cfg.Progress != nil {
		fmt.Fprintf(l.cfg.Progress, format+"\n", args...)
	}
}

// Up brings a lab up. A lab of the same name that is still there, running
// or left by a crash, is taken down first.
func Up(ctx context.Context, cfg Config) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root: it creates network namespaces")
	}
	if cfg.Name == "" {
		cfg.Name = "lab"
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	root := stateRoot(cfg.StateRoot)
	began := time.Now()

	l, err = claim(ctx, root, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab %s: %w", cfg.Name, err)
			if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
				err = fmt.Errorf("%w (and taking it down: %v)", err, derr)
			}
		}
	}()

	l.progress("lab %s: slot %d, namespaces %s-*, state in %s", cfg.Name, l.Index, l.Prefix(), l.dir)
	if err := l.buildBinaries(ctx); err != nil {
		return l, err
	}
	if err := buildNetwork(ctx, l.Plan); err != nil {
		return l, err
	}
	if err := buildScaleNetwork(ctx, l.Plan); err != nil {
		return l, err
	}
	l.progress("lab %s: network up (%d nodes, router, LAN client, external client)", cfg.Name, cfg.Nodes)
	if l.SpeakerOnly > 0 {
		l.progress("lab %s: and %d speaker-only nodes on the LAN", cfg.Name, l.SpeakerOnly)
	}
	if err := l.startControlPlane(ctx); err != nil {
		return l, err
	}
	l.progress("lab %s: kube-apiserver at %s, kube-controller-manager running", cfg.Name, l.state.APIServer)
	if err := l.startRouter(ctx); err != nil {
		return l, err
	}
	l.progress("lab %s: FRR router up (AS %d; nodes peer as AS %d)", cfg.Name, RouterASN, NodeASN)
	if err := l.startNodes(ctx); err != nil {
		return l, err
	}
	if cfg.Kubelet {
		l.progress("lab %s: %d nodes Ready (kubelet, containerd), kube-proxy (nftables) synced on each", cfg.Name, cfg.Nodes)
	} else {
		l.progress("lab %s: %d nodes Ready, kube-proxy (nftables) synced on each", cfg.Name, cfg.Nodes)
	}
	if err := l.createSpeakerOnlyNodes(ctx); err != nil {
		return l, err
	}
	if cfg.Kubelet && (cfg.CCM || cfg.Speakers) {
		if err := l.installWorkloads(ctx); err != nil {
			return l, err
		}
		l.progress("lab %s: ironlb installed from %s: ironlb-ccm and ironlb-speaker pods Ready", cfg.Name, DeployDir)
	} else if cfg.CCM {
		if err := l.StartCCM(ctx, cfg.CCMArgs...); err != nil {
			return l, err
		}
		l.progress("lab %s: ironlb-ccm running", cfg.Name)
	}
	if l.SpeakerOnly > 0 {
		if err := l.favorControlPlane(); err != nil {
			return l, err
		}
	}
	if cfg.Speakers && !cfg.Kubelet {
		if err := l.startSpeakers(ctx, cfg.SpeakerArgs...); err != nil {
			return l, err
		}
		if err := l.WaitSpeakersConverged(ctx); err != nil {
			return l, err
		}
		l.progress("lab %s: ironlb-speaker running on every node, each hearing the others", cfg.Name)
	}
	l.progress("lab %s: up in %.1fs", cfg.Name, time.Since(began).Seconds())
	return l, nil
}

// claim takes the lab's name and a free slot under the state root's lock:
// it takes down what a previous lab of that name left, removes any debris
// of the slot (no other lab owns it), and records the new lab's state.
func claim(ctx context.Context, root string, cfg Config) (*Lab, error) {
	unlock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir := filepath.Join(root, cfg.Name)
	if old, err := readState(dir); err == nil {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "lab %s: removing what a previous run left\n", cfg.Name)
		}
		if err := down(ctx, root, old); err != nil {
			return nil, err
		}
	}
	others, err := otherLabs(root, cfg.Name)
	if err != nil {
		return nil, err
	}
	index, err := freeIndex(others)
	if err != nil {
		return nil, err
	}
	plan, err := NewPlan(index, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	if plan, err = plan.WithSpeakerOnly(cfg.SpeakerOnlyNodes); err != nil {
		return nil, err
	}
	if err := removeNetwork(ctx, plan); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Lab{
		Plan:  plan,
		cfg:   cfg,
		dir:   dir,
		state: &State{Name: cfg.Name, Index: index, Nodes: cfg.Nodes, SpeakerOnlyNodes: cfg.SpeakerOnlyNodes, Kubelet: cfg.Kubelet, Created: time.Now().UTC()},
	}
	return l, writeState(dir, l.state)
}

// Open attaches to a lab that another process brought up.
func Open(name, stateRootDir string) (*Lab, error) {
	dir := filepath.Join(stateRoot(stateRootDir), name)
	s, err := readState(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab called %s (is it up?)", name)
		}
		return nil, err
	}
	plan, err := NewPlan(s.Index, s.Nodes)
	if err != nil {
		return nil, err
	}
	if plan, err = plan.WithSpeakerOnly(s.SpeakerOnlyNodes); err != nil {
		return nil, err
	}
	l := &Lab{Plan: plan, cfg: Config{Name: name, StateRoot: stateRootDir}, dir: dir, state: s}
	if s.APIServer != "" {
		if err := l.connect(filepath.Join(dir, "kubeconfig")); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *Lab) connect(kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	l.Kubeconfig, l.RESTConfig = kubeconfig, cfg
	if l.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	l.Dynamic, err = dynamic.NewForConfig(cfg)
	return err
}

// Down stops every process the lab recorded and removes its namespaces,
// links and state directory.
func (l *Lab) Down(ctx context.Context) error {
	root := stateRoot(l.cfg.StateRoot)
	unlock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer unlock()
	l.mu.Lock()
	s := l.state
	l.mu.Unlock()
	return down(ctx, root, s)
}

// Down takes the lab called name down, if there is one.
func Down(ctx context.Context, name, stateRootDir string) error {
	root := stateRoot(stateRootDir)
	unlock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := readState(filepath.Join(root, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return down(ctx, root, s)
}

// down runs with the root lock held.
func down(ctx context.Context, root string, s *State) error {
	procs := slices.Clone(s.Processes)
	slices.Reverse(procs)
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(3 * time.Second)
		}()
	}
	wg.Wait()
	var errs []error
	if plan, err := NewPlan(s.Index, max(s.Nodes, 1)); err == nil {
		if s.Kubelet {
			errs = append(errs, removeKubeletNodes(filepath.Join(root, s.Name), plan))
		}
		errs = append(errs, removeNetwork(ctx, plan))
	}
	errs = append(errs, os.RemoveAll(filepath.Join(root, s.Name)))
	if others, err := otherLabs(root, s.Name); err == nil && len(others) == 0 {
		removeUnreachable(ctx)
		removeKubeletDebris()
	}
	return errors.Join(errs...)
}

// List returns the states of every lab under the state root.
func List(stateRootDir string) ([]*State, error) {
	return otherLabs(stateRoot(stateRootDir), "")
}
