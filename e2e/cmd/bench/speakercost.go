package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/lab"
)

// What one speaker keeps and does as the cluster grows around it: its
// memory with many Services that are not LoadBalancers (and their
// EndpointSlices) added, the CPU it spends when their endpoints change, and
// its memory with many LoadBalancer Services of its own.
const (
	costLabName   = "bench-cost"
	costNamespace = "cost"
	costPool      = "bench-cost"
	// costPoolRange holds the LoadBalancer Services' addresses; they need
	// not be reachable for this measure. costServiceCIDR adds cluster IPs
	// for them: the lab's own range holds about a thousand.
	costPoolRange   = "10.96.0.0/17"
	costServiceCIDR = "10.112.0.0/18"
	// costSettle is how long a speaker is left alone before its memory is
	// read: the Go runtime returns freed memory to the system over minutes,
	// so the heap in use is read too.
	costSettle = 30 * time.Second
	// costAtRest is how long after the last creation a speaker's memory at
	// rest is read: the runtime collects at least every two minutes.
	costAtRest = 3 * time.Minute
)

// costReading is one speaker's memory and CPU, and how often it recomputed.
// live is its heap after a collection, read only with profiles.
type costReading struct {
	rss, heap, live, cpu, syncs float64
}

// costConfig is what the speaker's cost is measured with: others Services
// that are not LoadBalancers with endpointsPer endpoints each, then lbs
// LoadBalancer Services (either may be 0). With profiles set, the speaker
// serves Go's profiles and a heap profile is saved there at each reading.
type costConfig struct {
	others, endpointsPer, lbs int
	profiles                  string
}

func speakerCost(parent context.Context, cfg costConfig) []row {
	ctx, cancel := context.WithTimeout(parent, 40*time.Minute)
	defer cancel()
	var speakerArgs []string
	if cfg.profiles != "" {
		if err := os.MkdirAll(cfg.profiles, 0o755); err != nil {
			fail(err)
		}
		speakerArgs = append(speakerArgs, "--profiling")
	}
	// ironlb-ccm keeps its Lease with the defaults of deploy/, not the
	// lab's short ones: creating thousands of Services loads the machine,
	// and this measures the speaker, not failover.
	l, err := lab.Up(ctx, lab.Config{
		Name: costLabName, CCM: true, Speakers: true, Attached: true, Progress: os.Stderr, SpeakerArgs: speakerArgs,
		CCMArgs: []string{"--leader-elect-lease-duration=15s", "--leader-elect-renew-deadline=10s", "--leader-elect-retry-period=2s"},
	})
	if err != nil {
		fail(err)
	}
	defer l.Down(context.Background())
	c := &costBench{l: l, ctx: ctx, profiles: cfg.profiles}
	if _, err := l.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: costNamespace}}, metav1.CreateOptions{}); err != nil {
		c.fail(err)
	}
	var rows []row
	// Each row is also printed as soon as it is measured: the whole run
	// takes long enough for a later step to fail.
	add := func(what, value, note string) {
		rows = append(rows, row{"speaker cost: " + what, value, note})
		progress("speaker cost: %s: %s (%s)", what, value, note)
	}

	base := c.read("at-rest")
	add("RSS at rest", base.memory(), "node 1's speaker, 3-node lab, no Service")
	last := base
	if cfg.others > 0 {
		last = c.others(cfg, base, add)
	}
	if cfg.lbs > 0 {
		progress("speaker cost: creating %d LoadBalancer Services", cfg.lbs)
		if err := c.createLoadBalancers(cfg.lbs); err != nil {
			c.fail(err)
		}
		full := c.read("with-lbs")
		add(fmt.Sprintf("RSS with %d LoadBalancer Services", cfg.lbs), full.memory(),
			fmt.Sprintf("%s%.0f recomputes meanwhile; read %v after the last address", map[bool]string{true: "the other Services still there; "}[cfg.others > 0], full.syncs-last.syncs, costSettle))
		// At rest nothing allocates, so nothing collects the garbage of the
		// creations until the Go runtime's periodic collection (every two
		// minutes); then it returns the freed memory to the system.
		select {
		case <-c.ctx.Done():
			c.fail(c.ctx.Err())
		case <-time.After(costAtRest - 2*costSettle): // read waits costSettle too
		}
		rest := c.read("with-lbs-at-rest")
		add(fmt.Sprintf("RSS with %d LoadBalancer Services, at rest", cfg.lbs), rest.memory(),
			fmt.Sprintf("read %v after the last address, after the runtime's periodic collection; %.0f recomputes meanwhile", costAtRest, rest.syncs-full.syncs))
	}
	return rows
}

// others measures the speaker with Services that are not LoadBalancers: its
// memory once they are there, and its CPU when their endpoints change.
func (c *costBench) others(cfg costConfig, base costReading, add func(what, value, note string)) costReading {
	progress("speaker cost: creating %d headless Services and their EndpointSlices (%d endpoints each)", cfg.others, cfg.endpointsPer)
	if err := c.createOthers(cfg.others, cfg.endpointsPer); err != nil {
		c.fail(err)
	}
	with := c.read("with-others")
	add(fmt.Sprintf("RSS with %d non-LoadBalancer Services (%d endpoints)", cfg.others, cfg.others*cfg.endpointsPer),
		fmt.Sprintf("%+.1f MiB (heap in use %+.1f MiB)", with.rss-base.rss, with.heap-base.heap),
		fmt.Sprintf("against rest; %.0f recomputes while they were added", with.syncs-base.syncs))

	// What the speaker spends at rest (heartbeats, Leases) over the same
	// time is the baseline of the next row.
	began := time.Now()
	rest := c.read("at-rest-with-others")
	restCPU := (rest.cpu - with.cpu) / time.Since(began).Seconds()

	changes := min(1000, cfg.others)
	progress("speaker cost: %d endpoint changes of non-LoadBalancer Services", changes)
	began = time.Now()
	if err := c.moveEndpoints(changes); err != nil {
		c.fail(err)
	}
	moved := c.read("after-endpoint-changes")
	took := time.Since(began)
	add(fmt.Sprintf("CPU on %d endpoint changes of non-LoadBalancer Services", changes),
		fmt.Sprintf("%.0f ms", (moved.cpu-rest.cpu)*1000),
		fmt.Sprintf("%.0f recomputes; over %v, of which %.0f ms is what it spends at rest in that time", moved.syncs-rest.syncs, took.Round(time.Second), restCPU*took.Seconds()*1000))
	return moved
}

// memory says a reading's RSS and heap.
func (r costReading) memory() string {
	s := fmt.Sprintf("%.1f MiB (heap in use %.1f MiB", r.rss, r.heap)
	if r.live > 0 {
		s += fmt.Sprintf(", live %.1f MiB", r.live)
	}
	return s + ")"
}

type costBench struct {
	l        *lab.Lab
	ctx      context.Context
	profiles string
}

// fail takes the lab down and stops the bench.
func (c *costBench) fail(err error) {
	_ = c.l.Down(context.Background())
	fail(err)
}

// read waits costSettle and reads node 1's speaker.
func (c *costBench) read(when string) costReading {
	select {
	case <-c.ctx.Done():
		c.fail(c.ctx.Err())
	case <-time.After(costSettle):
	}
	m, err := c.l.SpeakerMetrics(1)
	if err != nil {
		c.fail(fmt.Errorf("speaker metrics %s: %w", when, err))
	}
	var r costReading
	for name, v := range map[string]*float64{
		"process_resident_memory_bytes": &r.rss, "go_memstats_heap_inuse_bytes": &r.heap,
		"process_cpu_seconds_total": &r.cpu, "ironlb_speaker_syncs_total": &r.syncs,
	} {
		got, ok := lab.MetricValue(m, name)
		if !ok {
			c.fail(fmt.Errorf("speaker metrics %s: no %s", when, name))
		}
		*v = got
	}
	r.rss, r.heap = r.rss/(1<<20), r.heap/(1<<20)
	if c.profiles != "" {
		live, err := c.saveHeap(when)
		if err != nil {
			c.fail(fmt.Errorf("speaker heap profile %s: %w", when, err))
		}
		r.live = live / (1 << 20)
	}
	return r
}

// saveHeap saves node 1's speaker's heap profile, taken after a collection,
// and returns its heap in use after that collection.
func (c *costBench) saveHeap(when string) (float64, error) {
	if err := saveProfile(c.l, 1, "heap?gc=1", filepath.Join(c.profiles, when+".heap.pb.gz")); err != nil {
		return 0, err
	}
	m, err := c.l.SpeakerMetrics(1)
	if err != nil {
		return 0, err
	}
	live, ok := lab.MetricValue(m, "go_memstats_heap_inuse_bytes")
	if !ok {
		return 0, fmt.Errorf("no go_memstats_heap_inuse_bytes")
	}
	return live, nil
}

// saveProfile saves node n's speaker's profile (a /debug/pprof/ path, with
// its query) as path. The speaker must run with --profiling.
func saveProfile(l *lab.Lab, n int, profile, path string) error {
	url := "http://" + net.JoinHostPort(l.NodeAddrs(n)[0].String(), "10292") + "/debug/pprof/" + profile
	resp, err := (&http.Client{Timeout: time.Minute}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parallel runs do(i) for i in [0, n), eight at a time, and returns the
// first error.
func (c *costBench) parallel(n int, do func(i int) error) error {
	errs := make(chan error, 1)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		if c.ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := do(i); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return c.ctx.Err()
	}
}

// retry runs do until it succeeds, a few times while a loaded API server
// times out, is too busy, fails inside or has a conflict; a create that
// finds its object done is done.
func (c *costBench) retry(do func() error) error {
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool {
		return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) ||
			apierrors.IsInternalError(err) || apierrors.IsConflict(err) || errors.Is(err, context.DeadlineExceeded)
	}, do)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// createOthers creates n headless Services (no cluster IP to allocate), each
// with one EndpointSlice of per endpoints spread over the nodes.
func (c *costBench) createOthers(n, per int) error {
	return c.parallel(n, func(i int) error {
		name := fmt.Sprintf("other-%05d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: costNamespace},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80}}},
		}
		err := c.retry(func() error {
			_, err := c.l.Client.CoreV1().Services(costNamespace).Create(c.ctx, svc, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return err
		}
		return c.retry(func() error {
			_, err := c.l.Client.DiscoveryV1().EndpointSlices(costNamespace).Create(c.ctx, c.slice(name, i, per, 0), metav1.CreateOptions{})
			return err
		})
	})
}

// slice is the EndpointSlice of Service name, its endpoints on the nodes
// from shift on.
func (c *costBench) slice(name string, i, per, shift int) *discoveryv1.EndpointSlice {
	ready := true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: costNamespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for j := range per {
		node := c.l.NodeName((j+shift)%3 + 1)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+i/65536, i/256%256, i%256&^7|j%8)},
			NodeName:   &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return es
}

// moveEndpoints moves the endpoints of n of the other Services to other
// nodes.
func (c *costBench) moveEndpoints(n int) error {
	return c.parallel(n, func(i int) error {
		name := fmt.Sprintf("other-%05d", i)
		return c.retry(func() error {
			cur, err := c.l.Client.DiscoveryV1().EndpointSlices(costNamespace).Get(c.ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			es := c.slice(name, i, len(cur.Endpoints), 1)
			es.ResourceVersion = cur.ResourceVersion
			_, err = c.l.Client.DiscoveryV1().EndpointSlices(costNamespace).Update(c.ctx, es, metav1.UpdateOptions{})
			return err
		})
	})
}

// createLoadBalancers creates n LoadBalancer Services in a pool of their own
// and waits until ironlb-ccm gave each its address.
func (c *costBench) createLoadBalancers(n int) error {
	if err := c.l.CreatePool(c.ctx, costPool, v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{costPoolRange}, L2: &v1alpha1.L2Advertisement{},
	}); err != nil {
		return err
	}
	if _, err := c.l.Client.NetworkingV1().ServiceCIDRs().Create(c.ctx, &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: costPool}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{costServiceCIDR}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	single, noNodePorts := corev1.IPFamilyPolicySingleStack, false // 10,000 exceed the NodePort range
	if err := c.parallel(n, func(i int) error {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lb-%05d", i), Namespace: costNamespace,
				Annotations: map[string]string{v1alpha1.AnnotationPool: costPool}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &single, AllocateLoadBalancerNodePorts: &noNodePorts,
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, Ports: []corev1.ServicePort{{Port: 80}}},
		}
		return c.retry(func() error {
			_, err := c.l.Client.CoreV1().Services(costNamespace).Create(c.ctx, svc, metav1.CreateOptions{})
			return err
		})
	}); err != nil {
		return err
	}
	for {
		list, err := c.l.Client.CoreV1().Services(costNamespace).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		with := 0
		for _, s := range list.Items {
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) > 0 {
				with++
			}
		}
		if with >= n {
			return nil
		}
		progress("speaker cost: %d of %d LoadBalancer Services have their address", with, n)
		select {
		case <-c.ctx.Done():
			return fmt.Errorf("%d of %d LoadBalancer Services have their address: %w", with, n, c.ctx.Err())
		case <-time.After(10 * time.Second):
		}
	}
}
