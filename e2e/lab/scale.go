package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// Large labs. A real L2 cluster has tens to hundreds of nodes; two cores
// cannot run a kube-proxy and backends on each. The nodes after the first
// Config.Nodes are speaker-only: a namespace on the LAN with its own
// address and MAC, a Ready Node object and an ironlb-speaker, and nothing
// else (no kube-proxy, no pod range, no endpoints). They answer ARP/NDP like
// any node, but traffic sent to them goes nowhere: a test that curls an
// address keeps it on the full nodes (an l2.nodeSelector, or
// externalTrafficPolicy Local) and checks the others by who answers ARP.

// MaxNodes bounds full and speaker-only nodes together: as many as the LAN's
// /24 has host numbers that no other host, probe sender or L2 pool address
// takes (see nodeHost).
const MaxNodes = 194

// AllNodes is the number of nodes, full and speaker-only: they are numbered
// 1..AllNodes().
func (p Plan) AllNodes() int { return p.Nodes + p.SpeakerOnly }

// SpeakerOnlyNode reports whether node n runs only a speaker.
func (p Plan) SpeakerOnlyNode(n int) bool { return n > p.Nodes && n <= p.AllNodes() }

// nodeName names full nodes nodeN, as every suite expects, and speaker-only
// nodes as a real cluster would (worker-017.k8s.example.internal): long
// names are part of what a membership at scale must carry.
func nodeName(p Plan, n int) string {
	if p.SpeakerOnlyNode(n) {
		return fmt.Sprintf("worker-%03d.k8s.example.internal", n)
	}
	return fmt.Sprintf("node%d", n)
}

// PortName is node n's port on the LAN switch; unlike a node name it fits a
// link name's 15 bytes.
func (p Plan) PortName(n int) string { return fmt.Sprintf("node%d", n) }

// WithSpeakerOnly is the plan with k speaker-only nodes after its full ones.
func (p Plan) WithSpeakerOnly(k int) (Plan, error) {
	if k < 0 || p.Nodes+k > MaxNodes {
		return Plan{}, fmt.Errorf("lab of %d full and %d speaker-only nodes: at most %d nodes in all", p.Nodes, k, MaxNodes)
	}
	p.SpeakerOnly = k
	return p, nil
}

// L2ScalePool is a wide range for L2 addresses, 254 IPv4 addresses where
// L2Pool has 32: a second subnet on the LAN segment, which the LAN client
// reaches on-link (it asks ARP/NDP for it on eth0) although no host holds an
// address in it, as a flat bare-metal network with several subnets on one
// VLAN does.
func (p Plan) L2ScalePool() []netip.Prefix {
	return []netip.Prefix{prefix(p.v4(3, 0), 24), prefix(p.v6(3, ""), 64)}
}

// probeSender is the sender address of an ARPProbe's i-th round (of 16 in
// turn): an unused LAN address, so that an answer names the round it
// answers.
func (p Plan) probeSender(i int) netip.Addr { return p.v4(0, 101+i%probeSenders) }

// probeSenders is how many sender addresses the probe takes in turn.
const probeSenders = 16

// isProbeSender reports whether a is one of the probe's sender addresses.
func (p Plan) isProbeSender(a netip.Addr) bool {
	for i := range probeSenders {
		if p.probeSender(i) == a {
			return true
		}
	}
	return false
}

// buildScaleNetwork joins the speaker-only nodes to the LAN (buildNetwork
// made their namespaces, as it makes every one of Namespaces) and routes the
// wide L2 range on-link in the LAN client.
func buildScaleNetwork(ctx context.Context, p Plan) error {
	lan := p.LAN()
	var sw []string
	for n := p.Nodes + 1; n <= p.AllNodes(); n++ {
		sw = append(sw,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", p.PortName(n), p.NodeNS(n)),
			fmt.Sprintf("link set %s master br0 up", p.PortName(n)))
	}
	if len(sw) > 0 {
		if err := ipBatch(ctx, p.SwitchNS(), sw...); err != nil {
			return err
		}
	}
	for n := p.Nodes + 1; n <= p.AllNodes(); n++ {
		if err := ipBatch(ctx, p.NodeNS(n), nodeLinkLines(p, n, lan)...); err != nil {
			return err
		}
	}
	var client []string
	for _, r := range p.L2ScalePool() {
		client = append(client, fmt.Sprintf("route replace %s dev eth0", r))
	}
	return ipBatch(ctx, p.ClientNS(), client...)
}

// createSpeakerOnlyNodes creates their Node objects, Ready, without pod ranges.
func (l *Lab) createSpeakerOnlyNodes(ctx context.Context) error {
	for n := l.Nodes + 1; n <= l.AllNodes(); n++ {
		if err := l.createNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// startSpeakers starts a speaker on every node, a few at a time, and waits
// until each is healthy.
func (l *Lab) startSpeakers(ctx context.Context, args ...string) error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for n := 1; n <= l.AllNodes(); n++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := l.StartSpeaker(ctx, n, args...); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// favorControlPlane raises the CPU priority of the control plane (etcd,
// kube-apiserver, kube-controller-manager, ironlb-ccm), every thread of
// each. In a real cluster the control plane has machines of its own; here
// it shares two cores with a speaker per node, and the scheduler's fair
// share among tens of speakers would leave the API server too little to
// answer within its timeouts.
func (l *Lab) favorControlPlane() error {
	var errs []error
	for _, p := range l.Processes() {
		switch p.Name {
		case "etcd", "kube-apiserver", "kube-controller-manager", "ironlb-ccm":
		default:
			continue
		}
		if !p.alive() {
			continue
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.Pid))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				// A thread may end meanwhile: not an error.
				_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, controlPlaneNice)
			}
		}
	}
	return errors.Join(errs...)
}

// controlPlaneNice is the control plane's nice value in a large lab.
const controlPlaneNice = -10
