// Command bench measures ironlb-speaker in the lab and prints one table:
// how long traffic to an L2 address stops when its node dies or its speaker
// stops (probing from the LAN client every 50 ms), how long a new Service
// takes to answer, and how many API requests the speakers make at rest with
// many Services; then L2 mode at several cluster sizes with the default
// heartbeat timers (l2scale.go), and what one speaker costs as the cluster
// grows around it (speakercost.go). It needs root.
//
//	go run ./cmd/bench [-runs 10] [-services 1000] [-l2-sizes 3,30,100] [-l2-budget 0] [-l2-only]
//	                   [-cost-others 10000] [-cost-endpoints 5] [-cost-lbs 10000] [-cost-only]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/lab"
)

type row struct{ what, value, note string }

const probeEvery = 50 * time.Millisecond

func main() {
	runs := flag.Int("runs", 10, "failovers to measure per kind")
	services := flag.Int("services", 1000, "Services for the API-requests-at-rest measure")
	l2Sizes := flag.String("l2-sizes", "3,30,100", "node counts for the L2 scale measures, comma-separated (none: skip them)")
	l2Only := flag.Bool("l2-only", false, "only the L2 scale measures")
	l2Each := flag.Duration("l2-budget", 0, "time for each L2 size, lab up and down included (0: by size, about 10 minutes for 3,30,100)")
	costOthers := flag.Int("cost-others", 10000, "Services that are not LoadBalancers, for the speaker's cost (0: skip them)")
	costEndpoints := flag.Int("cost-endpoints", 5, "endpoints of each of those")
	costLBs := flag.Int("cost-lbs", 10000, "LoadBalancer Services, for the speaker's cost (0, with -cost-others 0: no speaker cost)")
	profiles := flag.String("profiles", "", "a folder for Go profiles of the measured speakers: a heap profile per speaker-cost reading, and a CPU and a heap profile of node 2's speaker at rest for each L2 size (none: no profiles)")
	trace := flag.String("trace", "", "a folder for the L2 sizes' traces: each dark stretch of the rolling restart with the nodes before and after it, each restart's time, and the lab's logs (none: no traces)")
	bgpOnly := flag.Bool("bgp-only", false, "only the BGP measures, in the three-node lab")
	costOnly := flag.Bool("cost-only", false, "only the speaker's cost")
	podsOnly := flag.Bool("pods-only", false, "only L2 failover on real nodes (speaker pod deleted; kubelet and containerd killed)")
	flag.Parse()
	sizes, err := parseSizes(*l2Sizes)
	if err != nil {
		fail(err)
	}
	// Interrupted, the labs still come down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rows []row
	only := *l2Only || *bgpOnly || *costOnly || *podsOnly
	if *bgpOnly || !only {
		rows = classic(ctx, *runs, *services, *bgpOnly)
	}
	if *podsOnly || !only {
		rows = append(rows, onPods(ctx, *runs)...)
	}
	if *l2Only || !only {
		rows = append(rows, l2Scale(ctx, sizes, *l2Each, *profiles, *trace)...)
	}
	if (*costOnly || !only) && *costOthers+*costLBs > 0 {
		rows = append(rows, speakerCost(ctx, costConfig{others: *costOthers, endpointsPer: *costEndpoints, lbs: *costLBs, profiles: *profiles})...)
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEASURE\tVALUE\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.what, r.value, r.note)
	}
	w.Flush()
}

// classic measures failover, creation, BGP and API requests at rest in a
// lab of three full nodes (bgpOnly: BGP alone).
func classic(parent context.Context, runs, services int, bgpOnly bool) []row {
	ctx, cancel := context.WithTimeout(parent, 40*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ironlb-bench-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	audit, policy := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit-policy.yaml")
	// Every request of the speakers, by user agent, at the lowest level.
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		fail(err)
	}
	keep := os.Getenv("IRONLB_BENCH_KEEP") != "" // leave the lab up afterwards, for a look
	l, err := lab.Up(ctx, lab.Config{
		Name: "bench", CCM: true, Speakers: true, Attached: !keep, Progress: os.Stderr,
		APIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + audit, "--audit-log-mode=batch"},
	})
	if err != nil {
		fail(err)
	}
	if !keep {
		defer l.Down(context.Background())
	}

	b := &bench{l: l, ctx: ctx}
	if bgpOnly {
		return b.bgp(3, services)
	}
	var rows []row
	rows = append(rows, b.failovers("owner node dies (link down, processes killed)", runs,
		func(n int) error { return l.NodeDown(ctx, n) },
		func(n int) error { return l.NodeUp(ctx, n) })...)
	rows = append(rows, b.failovers("owner's speaker stops (SIGTERM)", max(runs/2, 3),
		func(n int) error { return l.Stop(l.SpeakerName(n), 10*time.Second) },
		func(n int) error { return l.Restart(l.SpeakerName(n)) })...)
	rows = append(rows, b.creation(5)...)
	rows = append(rows, b.bgp(3, services)...)
	rows = append(rows, b.restingRequests(audit, []int{100, services})...)
	return rows
}

// onPods measures L2 failover on real nodes (kubelet and containerd, ironlb
// installed from deploy/default): the owner's speaker pod deleted (the
// kubelet stops it with SIGTERM and the DaemonSet makes a new one), and the
// owner node's kubelet and containerd killed (the speaker's container runs
// on under its shim, so traffic should not notice).
func onPods(parent context.Context, runs int) []row {
	ctx, cancel := context.WithTimeout(parent, 30*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Config{Name: "bench-pods", Kubelet: true, CCM: true, Speakers: true, Attached: true, Progress: os.Stderr})
	if err != nil {
		fail(err)
	}
	defer l.Down(context.Background())
	b := &bench{l: l, ctx: ctx}
	rows := b.failovers("owner's speaker pod deleted (real nodes)", runs,
		b.deleteSpeakerPod,
		func(int) error { return l.WaitRolledOut(ctx, 3*time.Minute) })
	rows = append(rows, b.failovers("owner node's kubelet and containerd killed (real nodes; the pods run on)", max(runs/2, 3),
		func(n int) error {
			return errors.Join(l.Kill("kubelet@"+l.NodeName(n)), l.Kill("containerd@"+l.NodeName(n)))
		},
		func(n int) error {
			if err := errors.Join(l.Restart("containerd@"+l.NodeName(n)), l.Restart("kubelet@"+l.NodeName(n))); err != nil {
				return err
			}
			return l.WaitNodeReady(ctx, n)
		})...)
	return rows
}

// deleteSpeakerPod deletes the speaker pod on node n.
func (b *bench) deleteSpeakerPod(n int) error {
	pods, err := b.l.Client.CoreV1().Pods(lab.Namespace).List(b.ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=ironlb-speaker", FieldSelector: "spec.nodeName=" + b.l.NodeName(n)})
	if err != nil {
		return err
	}
	if len(pods.Items) != 1 {
		return fmt.Errorf("%d speaker pods on %s, want 1", len(pods.Items), b.l.NodeName(n))
	}
	return b.l.Client.CoreV1().Pods(lab.Namespace).Delete(b.ctx, pods.Items[0].Name, metav1.DeleteOptions{})
}

// fail stops the bench; without IRONLB_BENCH_KEEP the lab dies with it.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type bench struct {
	l      *lab.Lab
	ctx    context.Context
	n      int
	pooled bool
}

// service creates a dual-stack Service in the L2 pool with endpoints on every node.
func (b *bench) service(poolName string, nodes ...int) (types.NamespacedName, []netip.Addr, error) {
	return b.serviceWith(poolName, nil, nodes...)
}

// serviceWith is service with mutate applied to the Service before it is
// created.
func (b *bench) serviceWith(poolName string, mutate func(*corev1.Service), nodes ...int) (types.NamespacedName, []netip.Addr, error) {
	b.n++
	name := fmt.Sprintf("svc%d", b.n)
	policy := corev1.IPFamilyPolicyPreferDualStack
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{v1alpha1.AnnotationPool: poolName}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &policy,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	if _, err := b.l.Client.CoreV1().Services("default").Create(b.ctx, s, metav1.CreateOptions{}); err != nil {
		return types.NamespacedName{}, nil, err
	}
	key := types.NamespacedName{Namespace: "default", Name: name}
	for _, n := range nodes {
		if _, err := b.l.AddEndpoint(b.ctx, key, fmt.Sprintf("%s-n%d", name, n), n); err != nil {
			return key, nil, err
		}
	}
	addrs, err := b.l.WaitIngress(b.ctx, key, 1, 30*time.Second)
	return key, addrs, err
}

// pool creates the lab's L2 pool "bench", once per lab.
func (b *bench) pool() {
	if b.pooled {
		return
	}
	p := b.l.L2Pool()
	if err := b.l.CreatePool(b.ctx, "bench", v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{v1alpha1.AddressRange(p[0].String()), v1alpha1.AddressRange(p[1].String())},
		L2:        &v1alpha1.L2Advertisement{},
	}); err != nil {
		fail(err)
	}
	b.pooled = true
}

// owner is the node that answers ARP for addr, waiting for exactly one.
func (b *bench) owner(addr netip.Addr) (int, error) {
	for i := 0; i < 100; i++ {
		macs, err := lab.AnsweringMACs(b.ctx, b.l.ClientNS(), addr)
		if err == nil && len(macs) == 1 {
			if n := b.l.NodeByMAC(macs[0]); n != 0 {
				return n, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("no single node answers for %s", addr)
}

// failovers measures, runs times, from taking the owner of an address away
// to the first successful request from the LAN client.
func (b *bench) failovers(what string, runs int, stop, restore func(n int) error) []row {
	b.pool()
	_, addrs, err := b.service("bench", 1, 2, 3)
	if err != nil {
		fail(err)
	}
	addr := addrs[0]
	var times []time.Duration
	failed, lostAll := 0, 0
	for i := 0; i < runs; i++ {
		victim, err := b.owner(addr)
		if err != nil {
			fail(err)
		}
		if _, err := lab.CurlUntil(b.ctx, b.l.ClientNS(), addr, 80, "endpoint=", 40, 100*time.Millisecond); err != nil {
			fail(err)
		}
		p := startProber(b.l.ClientNS(), addr, probeEvery)
		time.Sleep(300 * time.Millisecond) // some successes before
		t0 := time.Now()
		if err := stop(victim); err != nil {
			fail(err)
		}
		back, ok := p.firstSuccessAfter(t0, 30*time.Second)
		lost := p.stop(t0)
		lostAll += lost
		if !ok {
			failed++
		} else {
			times = append(times, back.Sub(t0))
		}
		fmt.Fprintf(os.Stderr, "bench: %s, run %d: node%d, traffic back after %v (%d probes failed)\n", what, i+1, victim, back.Sub(t0).Round(time.Millisecond), lost)
		if err := restore(victim); err != nil {
			fail(err)
		}
		if err := b.l.WaitSpeakersConverged(b.ctx); err != nil {
			fail(err)
		}
		time.Sleep(time.Second)
	}
	r := summary("failover: "+what, times, failed, runs)
	r.note += fmt.Sprintf(", %d probes failed in all", lostAll)
	return []row{r}
}

func summary(what string, times []time.Duration, failed, runs int) row {
	if len(times) == 0 {
		return row{what, "no run recovered", fmt.Sprintf("%d runs", runs)}
	}
	slices.Sort(times)
	med := times[len(times)/2]
	if len(times)%2 == 0 {
		med = (times[len(times)/2-1] + times[len(times)/2]) / 2
	}
	note := fmt.Sprintf("%d runs, probing every %v", runs, probeEvery)
	if failed > 0 {
		note += fmt.Sprintf(", %d did not recover within 30 s", failed)
	}
	return row{what, fmt.Sprintf("median %v, min %v, max %v", med.Round(time.Millisecond), times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond)), note}
}

// creation measures from creating a Service to its address answering ARP
// and to the first successful request.
func (b *bench) creation(runs int) []row {
	b.pool()
	var toAnswer, toCurl []time.Duration
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		_, addrs, err := b.service("bench", 2)
		if err != nil {
			fail(err)
		}
		p := startProber(b.l.ClientNS(), addrs[0], probeEvery)
		for j := 0; j < 600; j++ {
			// The question goes out at once; the answer is waited for a
			// second to see every one, so count from the asking.
			asked := time.Since(t0)
			if macs, _ := lab.AnsweringMACs(b.ctx, b.l.ClientNS(), addrs[0]); len(macs) == 1 {
				toAnswer = append(toAnswer, asked)
				break
			}
		}
		back, ok := p.firstSuccessAfter(t0, 30*time.Second)
		p.stop(t0)
		if ok {
			toCurl = append(toCurl, back.Sub(t0))
		}
	}
	return []row{
		summary("Service created → its address answers ARP (±asking interval)", toAnswer, runs-len(toAnswer), runs),
		summary("Service created → first successful request", toCurl, runs-len(toCurl), runs),
	}
}

// bgp measures BGP mode against the lab's FRR: creation to route and to
// traffic from the external client, graceful stop to withdrawal, node death
// to the dead next hop leaving the router (hold 9 s and 3 s alone, BFD at
// its defaults and at 100 ms x 3), and the
// UPDATEs the router receives when many Services are added.
func (b *bench) bgp(runs, services int) []row {
	ctx := b.ctx
	routed := b.l.RoutedPool()
	if err := b.l.CreatePool(ctx, "bench-bgp", v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{v1alpha1.AddressRange(routed[0].String()), v1alpha1.AddressRange(routed[1].String())},
		BGP:       &v1alpha1.BGPAdvertisement{},
	}); err != nil {
		fail(err)
	}
	setPeer := func(hold, keepalive time.Duration, bfd *v1alpha1.BFDSettings) {
		_ = b.l.DeleteBGPPeer(ctx, "bench-router")
		if err := b.l.CreateBGPPeer(ctx, "bench-router", v1alpha1.BGPPeerSpec{
			Address: b.l.RouterLAN()[0].String(), ASN: lab.RouterASN, LocalASN: lab.NodeASN,
			HoldTime: &metav1.Duration{Duration: hold}, KeepaliveTime: &metav1.Duration{Duration: keepalive},
			ConnectTime: &metav1.Duration{Duration: time.Second}, BFD: bfd,
		}); err != nil {
			fail(err)
		}
	}
	setPeer(9*time.Second, 3*time.Second, nil)
	var toRoute, toAll, toCurl []time.Duration
	var addr netip.Addr
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		_, addrs, err := b.service("bench-bgp", 1, 2, 3)
		if err != nil {
			fail(err)
		}
		addr = addrs[0]
		p := startProber(b.l.ExternalNS(), addr, probeEvery)
		first, all := b.waitNextHops(addr, 3)
		toRoute, toAll = append(toRoute, first.Sub(t0)), append(toAll, all.Sub(t0))
		if back, ok := p.firstSuccessAfter(t0, 30*time.Second); ok {
			toCurl = append(toCurl, back.Sub(t0))
		}
		p.stop(t0)
	}
	rows := []row{
		summary("BGP: Service created → first next hop on the router", toRoute, runs-len(toRoute), runs),
		summary("BGP: Service created → all three next hops on the router", toAll, runs-len(toAll), runs),
		summary("BGP: Service created → first request from the external client", toCurl, runs-len(toCurl), runs),
	}

	var withdrawn []time.Duration
	lostTotal := 0
	for i := 0; i < runs; i++ {
		victim := 1 + i%3
		p := startProber(b.l.ExternalNS(), addr, probeEvery)
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		if err := b.l.Stop(b.l.SpeakerName(victim), 10*time.Second); err != nil {
			fail(err)
		}
		gone := b.waitNextHopGone(addr, victim)
		withdrawn = append(withdrawn, gone.Sub(t0))
		lostTotal += p.stop(t0)
		if err := b.l.Restart(b.l.SpeakerName(victim)); err != nil {
			fail(err)
		}
		b.waitNextHops(addr, 3)
	}
	rows = append(rows, summary("BGP: speaker SIGTERM → its next hop gone from the router", withdrawn, 0, runs))
	rows[len(rows)-1].note += fmt.Sprintf("; %d requests failed in all", lostTotal)

	// Node death is measured on a Service with externalTrafficPolicy
	// Local, as BGP users run it: each node sends its traffic to its own
	// endpoint, so once the router drops the dead node's next hop every
	// request finds a live one. (With Cluster, the live nodes would still
	// send a third of the requests to the dead node's endpoint, which
	// nothing in this lab removes: that would measure the endpoint, not the
	// route.)
	_, local, err := b.serviceWith("bench-bgp", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}, 1, 2, 3)
	if err != nil {
		fail(err)
	}
	addr = local[0]
	// The router spreads flows over the next hops by their ports too, as
	// routers in front of many clients do: the prober's connections, all
	// from one address, then cross every node, and each death breaks some
	// of them until the router drops the dead next hop.
	if _, err := lab.Exec(ctx, b.l.RouterNS(), "sysctl", "-q", "-w",
		"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"); err != nil {
		fail(err)
	}
	for _, d := range deathDetections() {
		if err := b.routerBFD(d.routerMs); err != nil {
			fail(err)
		}
		setPeer(d.hold, d.keepalive, d.bfd)
		b.waitNextHops(addr, 3)
		if d.bfd != nil {
			b.waitRouterBFDUp(3)
		}
		var gone, recovered []time.Duration
		for i := 0; i < runs; i++ {
			victim := 1 + i%3
			p := startProber(b.l.ExternalNS(), addr, probeEvery)
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			if err := b.l.NodeDown(ctx, victim); err != nil {
				fail(err)
			}
			gone = append(gone, b.waitNextHopGone(addr, victim).Sub(t0))
			time.Sleep(time.Second)
			recovered = append(recovered, p.lastFailureAfter(t0).Add(probeEvery).Sub(t0))
			p.stop(t0)
			progress("BGP, %s: node %d died; its next hop left the router after %v; the requests that failed were sent at %v",
				d.name, victim, gone[len(gone)-1].Round(time.Millisecond), p.failedSince(t0))
			if err := b.l.NodeUp(ctx, victim); err != nil {
				fail(err)
			}
			b.waitNextHops(addr, 3)
			if d.bfd != nil {
				b.waitRouterBFDUp(3)
			}
		}
		rows = append(rows,
			summary("BGP: node dies → its next hop gone from the router ("+d.name+")", gone, 0, runs),
			summary("BGP: node dies → last failed request ("+d.name+")", recovered, 0, runs))
	}
	if err := b.routerBFD(300); err != nil {
		fail(err)
	}

	before := b.updatesReceived()
	policy := corev1.IPFamilyPolicySingleStack
	for i := 0; i < services; i++ {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bgp%d", i), Namespace: "default", Annotations: map[string]string{v1alpha1.AnnotationPool: "bench-bgp"}},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &policy, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol},
				AllocateLoadBalancerNodePorts: new(bool),
				Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		}
		if _, err := b.l.Client.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			fail(err)
		}
	}
	if _, err := b.l.WaitCondition(ctx, types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("bgp%d", services-1)}, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 5*time.Minute); err != nil {
		fail(err)
	}
	time.Sleep(5 * time.Second)
	after := b.updatesReceived()
	rows = append(rows, row{fmt.Sprintf("BGP: UPDATEs the router received for %d new Services", services),
		fmt.Sprintf("%d (%.2f per Service per session)", after-before, float64(after-before)/float64(services)/3),
		"all three nodes' sessions, from FRR's neighbor message counters"})
	_ = b.l.DeleteBGPPeer(ctx, "bench-router")
	return rows
}

// deathDetection is one way the router learns that a node died: the BGP
// hold time alone, or BFD with the given timers at both ends.
type deathDetection struct {
	name            string
	hold, keepalive time.Duration
	bfd             *v1alpha1.BFDSettings // nil: no BFD
	routerMs        int                   // the router's BFD intervals, ms
}

func deathDetections() []deathDetection {
	bfd := func(ms int) *v1alpha1.BFDSettings {
		d := &metav1.Duration{Duration: time.Duration(ms) * time.Millisecond}
		three := int32(3)
		return &v1alpha1.BFDSettings{MinReceive: d, MinTransmit: d, Multiplier: &three}
	}
	return []deathDetection{
		{"hold 9s, keepalive 3s", 9 * time.Second, 3 * time.Second, nil, 300},
		{"hold 3s, keepalive 1s", 3 * time.Second, time.Second, nil, 300},
		{"hold 9s, BFD 300ms x 3, the defaults", 9 * time.Second, 3 * time.Second, bfd(300), 300},
		{"hold 9s, BFD 100ms x 3", 9 * time.Second, 3 * time.Second, bfd(100), 100},
	}
}

// routerBFD sets the router's BFD profile for the nodes to ms both ways,
// three packets missed.
func (b *bench) routerBFD(ms int) error {
	return b.l.ConfigureRouter(b.ctx, "bfd", "profile "+lab.RouterBFDProfile,
		fmt.Sprintf("receive-interval %d", ms), fmt.Sprintf("transmit-interval %d", ms), "detect-multiplier 3")
}

// waitRouterBFDUp waits until the router's BFD sessions with the first n
// nodes are up.
func (b *bench) waitRouterBFDUp(n int) {
	for i := 0; i < 3000; i++ {
		peers, err := b.l.RouterBFDPeers(b.ctx)
		up := 0
		for node := 1; err == nil && node <= n; node++ {
			if peers[b.l.NodeAddrs(node)[0]] == "up" {
				up++
			}
		}
		if up == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail(fmt.Errorf("the router's BFD sessions with %d nodes did not come up in 60 s", n))
}

// waitNextHops polls the router's RIB every 20 ms until addr's route has n
// next hops; it returns when the first and when all appeared.
func (b *bench) waitNextHops(addr netip.Addr, n int) (first, all time.Time) {
	for i := 0; i < 3000; i++ {
		routes, err := b.l.RouterRoutes(b.ctx, addr.Is6())
		if err == nil {
			if r, ok := routes[netip.PrefixFrom(addr, addr.BitLen())]; ok && r.Protocol == "bgp" {
				if first.IsZero() {
					first = time.Now()
				}
				if len(r.NextHops) >= n {
					return first, time.Now()
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail(fmt.Errorf("the router never got %d next hops for %s", n, addr))
	return
}

// waitNextHopGone polls until node n is no next hop of addr's route.
func (b *bench) waitNextHopGone(addr netip.Addr, n int) time.Time {
	hop := b.l.NodeAddrs(n)[0]
	for i := 0; i < 3000; i++ {
		routes, err := b.l.RouterRoutes(b.ctx, false)
		if err == nil && !slices.Contains(routes[netip.PrefixFrom(addr, 32)].NextHops, hop) {
			return time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail(fmt.Errorf("node%d stayed a next hop of %s", n, addr))
	return time.Time{}
}

// updatesReceived sums the UPDATEs FRR received from every neighbor.
func (b *bench) updatesReceived() int {
	out, err := b.l.Vtysh(b.ctx, "show bgp neighbors json")
	if err != nil {
		fail(err)
	}
	var neighbors map[string]struct {
		MessageStats struct {
			UpdatesRecv int `json:"updatesRecv"`
		} `json:"messageStats"`
	}
	if err := json.Unmarshal([]byte(out), &neighbors); err != nil {
		fail(err)
	}
	n := 0
	for _, nb := range neighbors {
		n += nb.MessageStats.UpdatesRecv
	}
	return n
}

// restingRequests counts the speakers' API requests in a quiet minute with
// count Services in the L2 pool.
func (b *bench) restingRequests(audit string, counts []int) []row {
	var rows []row
	made := 0
	for _, count := range counts {
		busy, first := countRequests(audit), made
		policy := corev1.IPFamilyPolicySingleStack
		for ; made < count; made++ {
			s := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("rest%d", made), Namespace: "default", Annotations: map[string]string{v1alpha1.AnnotationPool: "bench"}},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &policy, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol},
					AllocateLoadBalancerNodePorts: new(bool),
					Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
				},
			}
			if _, err := b.l.Client.CoreV1().Services("default").Create(b.ctx, s, metav1.CreateOptions{}); err != nil {
				fail(err)
			}
		}
		// Let addresses, announcements and conditions settle first.
		last := fmt.Sprintf("rest%d", count-1)
		if _, err := b.l.WaitCondition(b.ctx, types.NamespacedName{Namespace: "default", Name: last}, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 5*time.Minute); err != nil {
			fail(err)
		}
		// Trailing condition writes and events of the burst end within seconds.
		time.Sleep(30 * time.Second)
		before := countRequests(audit)
		rows = append(rows, row{fmt.Sprintf("speakers' API requests while %d Services were created", count-first), fmt.Sprint(before - busy),
			"the Announced conditions they wrote (and events), once per Service"})
		time.Sleep(time.Minute)
		n := countRequests(audit) - before
		rows = append(rows, row{fmt.Sprintf("speakers' API requests at rest, %d Services", count), fmt.Sprintf("%d per minute", n),
			fmt.Sprintf("all %d speakers together, from the API server's audit log; watches only", b.l.Nodes)})
	}
	return rows
}

// countRequests counts finished requests with a speaker's user agent.
func countRequests(audit string) int {
	data, err := os.ReadFile(audit)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, `"userAgent":"ironlb-speaker/`) && strings.Contains(line, `"stage":"ResponseComplete"`) {
			n++
		}
	}
	return n
}

// prober sends a new HTTP request to addr from namespace ns every interval,
// each on a fresh connection with a 300 ms limit, and records the times of
// the successes.
type prober struct {
	mu       sync.Mutex
	ok       []time.Time
	failures []time.Time
	done     chan struct{}
	wg       sync.WaitGroup
}

func startProber(ns string, addr netip.Addr, every time.Duration) *prober {
	p := &prober{done: make(chan struct{})}
	ticks := make(chan time.Time)
	const workers = 10 // a failing request holds a worker for 300 ms
	for range workers {
		p.wg.Add(1)
		go p.worker(ns, addr, ticks)
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		defer close(ticks)
		for {
			select {
			case <-p.done:
				return
			case now := <-t.C:
				select {
				case ticks <- now:
				default: // every worker busy: this probe is skipped
				}
			}
		}
	}()
	return p
}

// worker runs on a thread of its own moved into namespace ns, so that its
// sockets are the client's. The thread goes back to the root namespace and
// to the runtime afterwards: a locked thread that ends would take with it,
// by their parent-death signal, the lab processes that were started from it.
func (p *prober) worker(ns string, addr netip.Addr, ticks <-chan time.Time) {
	defer p.wg.Done()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		fmt.Fprintln(os.Stderr, "bench: prober:", err)
		return
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		fmt.Fprintln(os.Stderr, "bench: prober:", err)
		return
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		fmt.Fprintln(os.Stderr, "bench: prober:", err)
		return
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	for sent := range ticks {
		ok := request(addr)
		p.mu.Lock()
		if ok {
			p.ok = append(p.ok, sent)
		} else {
			p.failures = append(p.failures, sent)
		}
		p.mu.Unlock()
	}
}

func request(addr netip.Addr) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr.String(), "80"), 300*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\nHost: bench\r\n\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 512)
	n, _ := conn.Read(buf)
	return strings.HasPrefix(string(buf[:n]), "HTTP/1.0 200")
}

// firstSuccessAfter waits for the first success of a probe sent after t0.
func (p *prober) firstSuccessAfter(t0 time.Time, limit time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, t := range p.ok {
			if t.After(t0) {
				p.mu.Unlock()
				return t, true
			}
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, false
}

// failedSince lists when the probes that failed were sent, from t0.
func (p *prober) failedSince(t0 time.Time) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for _, t := range p.failures {
		if t.After(t0) {
			out = append(out, t.Sub(t0).Round(10*time.Millisecond))
		}
	}
	slices.Sort(out)
	return out
}

// lastFailureAfter is the send time of the last failed probe after t0
// (t0 if none failed).
func (p *prober) lastFailureAfter(t0 time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	last := t0
	for _, t := range p.failures {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// stop ends the probing and says how many probes sent after t0 failed.
func (p *prober) stop(t0 time.Time) int {
	close(p.done)
	p.wg.Wait()
	n := 0
	for _, t := range p.failures {
		if t.After(t0) {
			n++
		}
	}
	return n
}
