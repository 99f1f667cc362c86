// Command lab brings up, shows and removes ironlb's bare-metal lab: a
// Kubernetes control plane, nodes with kube-proxy, an FRR router and clients
// in network namespaces. It needs root.
//
//	lab up     [--name lab] [--nodes 3] [--no-sample] [--kubelet=false]
//	lab status [--name lab]
//	lab down   [--name lab | --all | --tests]
//
// The upstream binaries it runs are built beforehand, with progress, by
// hack/upstream (make lab and make test run it first).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/e2e/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	name := fs.String("name", "lab", "lab name")
	var err error
	switch cmd {
	case "up":
		nodes := fs.Int("nodes", 3, "number of nodes")
		noSample := fs.Bool("no-sample", false, "do not create the sample pool and Service")
		kubelet := fs.Bool("kubelet", true, "real nodes: a kubelet and containerd each, ironlb installed from deploy/ as pods, echo pods as backends (false: nodes of processes, as the test suites but e2e/pods use)")
		fs.Parse(args)
		err = up(ctx, *name, *nodes, !*noSample, *kubelet)
	case "down":
		all := fs.Bool("all", false, "take every lab down")
		tests := fs.Bool("tests", false, "take down the labs of the end-to-end tests (names e2e-*)")
		fs.Parse(args)
		err = down(ctx, *name, *all, *tests)
	case "status":
		fs.Parse(args)
		err = status(*name)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: lab up|status|down [--name NAME] (see the README)")
	os.Exit(2)
}

// sayWhatUpDoes tells, before anything is built, what up does to the labs
// already there: a lab of the same name is replaced, every other lab (the
// test suites' e2e-* labs) is left alone and keeps its slot.
func sayWhatUpDoes(name string) {
	states, err := lab.List("")
	if err != nil {
		return
	}
	var others []string
	for _, s := range states {
		if s.Name != name {
			others = append(others, fmt.Sprintf("%s (slot %d)", s.Name, s.Index))
			continue
		}
		running := 0
		for _, p := range s.Processes {
			if p.Alive() {
				running++
			}
		}
		fmt.Printf("lab %s: a lab called %s is already there (slot %d, up since %s, %d of %d processes running): taking it down and bringing up a new one\n",
			name, name, s.Index, s.Created.Local().Format("15:04:05"), running, len(s.Processes))
	}
	if len(others) > 0 {
		fmt.Printf("lab %s: leaving the other labs alone: %s; this one takes a free slot of its own\n", name, strings.Join(others, ", "))
	}
}

func up(ctx context.Context, name string, nodes int, sample, kubelet bool) error {
	sayWhatUpDoes(name)
	l, err := lab.Up(ctx, lab.Config{Name: name, Nodes: nodes, CCM: true, Speakers: true, Kubelet: kubelet, Kubectl: true, Progress: os.Stdout})
	if err != nil {
		return err
	}
	if sample {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := l.Sample(sctx, os.Stdout); err != nil {
			if name == "lab" {
				return fmt.Errorf("%w\n(the lab is still up: make lab-status; make lab-down)", err)
			}
			return fmt.Errorf("%w\n(the lab is still up: go run ./cmd/lab status --name %s; go run ./cmd/lab down --name %s)", err, name, name)
		}
	}
	fmt.Printf(`
The lab is up. Look around:
  export KUBECONFIG=%[1]s/kubeconfig PATH=%[1]s/bin:$PATH
  kubectl get nodes,pods,services,ippools -A -o wide
  ip netns exec %[2]s bash          # a shell on the LAN client; nodes are %[3]s-node1..%[4]d
  ip netns exec %[5]s vtysh --vty_socket %[1]s/frr -c 'show ip route'

  make lab-status                   # every namespace and process, with its log
  make lab-down                     # take it down
`, l.Dir(), l.ClientNS(), l.Prefix(), l.Nodes, l.RouterNS())
	return nil
}

func down(ctx context.Context, name string, all, tests bool) error {
	if !all && !tests {
		return lab.Down(ctx, name, "")
	}
	states, err := lab.List("")
	if err != nil {
		return err
	}
	for _, s := range states {
		if tests && !strings.HasPrefix(s.Name, "e2e-") {
			continue
		}
		if err := lab.Down(ctx, s.Name, ""); err != nil {
			return err
		}
	}
	return nil
}

func status(name string) error {
	l, err := lab.Open(name, "")
	if err != nil {
		return err
	}
	fmt.Printf("lab %s: slot %d, %d nodes, state in %s\n", l.Name(), l.Index, l.Nodes, l.Dir())
	fmt.Printf("API server: %s  (KUBECONFIG=%s/kubeconfig)\n\nnamespaces:\n", l.RESTConfig.Host, l.Dir())
	present := map[string]bool{}
	for _, ns := range lab.ExistingNamespaces(context.Background(), l.Plan) {
		present[ns] = true
	}
	for _, ns := range l.Namespaces() {
		fmt.Printf("  %-20s %s\n", ns, map[bool]string{true: "present", false: "MISSING"}[present[ns]])
	}
	fmt.Printf("\nprocesses:\n")
	for _, p := range l.Processes() {
		where := p.Namespace
		if where == "" {
			where = "(root)"
		}
		state := "running"
		if !p.Alive() {
			state = "STOPPED"
		}
		fmt.Printf("  %-26s pid %-8d %-8s %-20s %s\n", p.Name, p.Pid, state, where, p.Log)
	}
	if eps := l.AllEndpoints(); len(eps) > 0 {
		fmt.Printf("\nendpoints:\n")
		for _, e := range eps {
			fmt.Printf("  %-12s %-20s node%d  %s  ready=%t serving=%t terminating=%t\n", e.Name, e.Service, e.Node, strings.Join(e.Addrs, ","), e.Ready, e.Serving, e.Terminating)
		}
	}
	return nil
}
