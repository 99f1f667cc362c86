// Package framework runs the end-to-end tests of one package against one
// lab: Main brings it up for the package, New gives each test a Kubernetes
// namespace of its own, cleans up after it, and prints every component's log
// lines from the test's time when the test fails.
package framework

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/lab"
)

var shared *lab.Lab

// Main brings up the package's lab, runs the tests and takes the lab down.
// The tests need root; without it they fail, they do not skip.
func Main(m *testing.M, cfg lab.Config) {
	os.Exit(run(m, cfg))
}

func run(m *testing.M, cfg lab.Config) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the end-to-end tests need root: they build a lab in network namespaces (run make test as root)")
		return 1
	}
	if cfg.Name == "" {
		wd, _ := os.Getwd()
		cfg.Name = "e2e-" + filepath.Base(wd)
	}
	// IRONLB_E2E_LAB names the lab (e2e-<name>), so two runs of one package can go on at once.
	if n := os.Getenv("IRONLB_E2E_LAB"); n != "" {
		cfg.Name = "e2e-" + n
	}
	// Attached: the lab dies with the test binary, also on a timeout panic.
	// IRONLB_E2E_KEEP leaves it up after a failure, for a look around.
	cfg.Attached = os.Getenv("IRONLB_E2E_KEEP") == ""
	cfg.Progress = os.Stderr
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	l, err := lab.Up(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: bring the lab up: %v\n", err)
		return 1
	}
	shared = l
	code := m.Run()
	if code != 0 && os.Getenv("IRONLB_E2E_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "IRONLB_E2E_KEEP is set: lab %s stays up for a look (state in %s); take it down with: go run ./cmd/lab down --name %s\n", l.Name(), l.Dir(), l.Name())
		return code
	}
	if err := l.Down(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: take the lab down: %v\n", err)
		return 1
	}
	return code
}

// F is one test's view of the lab.
type F struct {
	*lab.Lab
	T         *testing.T
	Ctx       context.Context
	Namespace string

	mu      sync.Mutex
	offsets map[string]int64 // log path -> size when the test began
	cleanup []func(context.Context)
	pools   []string // IPPools the test made, deleted when it ends
}

// New gives t the package's lab and a namespace of its own.
func New(t *testing.T) *F {
	t.Helper()
	if shared == nil {
		t.Fatal("no lab: the package's TestMain must call framework.Main")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	f := &F{Lab: shared, T: t, Ctx: ctx, offsets: map[string]int64{}}
	for _, p := range shared.Processes() {
		if fi, err := os.Stat(p.Log); err == nil {
			f.offsets[p.Log] = fi.Size()
		}
	}
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	f.Namespace = strings.Trim(name, "-")
	if _, err := f.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", f.Namespace, err)
	}
	t.Cleanup(func() {
		defer cancel()
		if t.Failed() {
			f.dumpLogs()
		}
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for i := len(f.cleanup) - 1; i >= 0; i-- {
			f.cleanup[i](cctx)
		}
		for _, e := range f.AllEndpoints() {
			if strings.HasPrefix(e.Service, f.Namespace+"/") {
				if err := f.RemoveEndpoint(cctx, e.Name); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		if err := f.Client.CoreV1().Namespaces().Delete(cctx, f.Namespace, metav1.DeleteOptions{}); err != nil {
			t.Errorf("cleanup: delete namespace %s: %v", f.Namespace, err)
		}
		// A pool that announces a Service's address stays (ironlb-ccm's finalizer) until the
		// Service goes with the namespace: wait for it, so that the next test may make a pool
		// of the same name.
		for _, name := range f.pools {
			err := wait.PollUntilContextCancel(cctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				_, err := f.Dynamic.Resource(v1alpha1.IPPoolResource).Get(ctx, name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if err != nil {
				t.Errorf("cleanup: IPPool %s is still there: %v", name, err)
			}
		}
	})
	return f
}

// Cleanup runs fn when the test ends, before its namespace goes.
func (f *F) Cleanup(fn func(context.Context)) { f.cleanup = append(f.cleanup, fn) }

// dumpLogs prints what every component logged during the test.
func (f *F) dumpLogs() {
	const maxLines = 60
	for _, p := range f.Processes() {
		data, err := os.ReadFile(p.Log)
		if err != nil {
			continue
		}
		if off := f.offsets[p.Log]; off <= int64(len(data)) {
			data = data[off:]
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) == 1 && lines[0] == "" {
			continue
		}
		skipped := ""
		if len(lines) > maxLines {
			skipped = fmt.Sprintf(" (last %d of %d lines; all in %s)", maxLines, len(lines), p.Log)
			lines = lines[len(lines)-maxLines:]
		}
		f.T.Logf("--- %s during the test%s:\n%s", p.Name, skipped, strings.Join(lines, "\n"))
	}
}

// Eventually calls check every interval until it returns nil, at most
// attempts times; the test fails with check's last error.
func (f *F) Eventually(what string, attempts int, interval time.Duration, check func() error) {
	f.T.Helper()
	var err error
	for i := 0; i < attempts; i++ {
		if err = check(); err == nil {
			return
		}
		if f.Ctx.Err() != nil {
			break
		}
		time.Sleep(interval)
	}
	f.T.Fatalf("%s: not so after %d tries %s apart: %v", what, attempts, interval, err)
}

// Service creates a Service of type LoadBalancer in the test's namespace
// with one TCP port 80 -> 8080; mutate changes it before it is created.
func (f *F) Service(name string, mutate func(*corev1.Service)) types.NamespacedName {
	f.T.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.Namespace},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	s.Spec.Ports[0].TargetPort.IntVal = 8080
	if mutate != nil {
		mutate(s)
	}
	if _, err := f.Client.CoreV1().Services(f.Namespace).Create(f.Ctx, s, metav1.CreateOptions{}); err != nil {
		f.T.Fatalf("create Service %s: %v", name, err)
	}
	return types.NamespacedName{Namespace: f.Namespace, Name: name}
}

// Endpoint adds a ready endpoint for svc on node n.
func (f *F) Endpoint(svc types.NamespacedName, name string, n int) *lab.Endpoint {
	f.T.Helper()
	ep, err := f.AddEndpoint(f.Ctx, svc, name, n)
	if err != nil {
		f.T.Fatal(err)
	}
	return ep
}

// Route adds a static route in namespace ns for prefix via node n, removed
// when the test ends.
func (f *F) Route(ns string, prefix netip.Prefix, n int) {
	f.T.Helper()
	if err := f.StaticRoute(f.Ctx, ns, prefix, n); err != nil {
		f.T.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) {
		if err := f.DeleteStaticRoute(ctx, ns, prefix); err != nil {
			f.T.Errorf("cleanup: %v", err)
		}
	})
}

// Curl fetches http://addr/ from namespace ns until the body contains want,
// trying at most attempts times 250 ms apart, and returns the body.
func (f *F) Curl(ns string, addr netip.Addr, want string, attempts int) string {
	f.T.Helper()
	body, err := lab.CurlUntil(f.Ctx, ns, addr, 80, want, attempts, 250*time.Millisecond)
	if err != nil {
		f.T.Fatalf("curl from %s: %v", ns, err)
	}
	return body
}

// CurlSteady curls http://addr/ from namespace ns until run answers in a row
// contain want, at most attempts times, and fails the test otherwise. A
// change (an endpoint made unready, moved) reaches kube-proxy on the node
// that carries the route a moment later, and until then the right endpoint
// can answer by chance: only a run of answers says that the change took
// effect, and that no other endpoint answers any more.
func (f *F) CurlSteady(ns string, addr netip.Addr, want string, run, attempts int) {
	f.T.Helper()
	seen := map[string]int{}
	streak := 0
	for i := 0; i < attempts && f.Ctx.Err() == nil; i++ {
		body, err := lab.Curl(f.Ctx, ns, addr, 80, "/")
		if err == nil && strings.Contains(body, want) {
			seen[strings.TrimSpace(body)]++
			if streak++; streak == run {
				return
			}
			continue
		}
		if err != nil {
			msg := err.Error()
			seen["error: "+msg[strings.LastIndex(msg, ": ")+2:]]++
		} else {
			seen[strings.TrimSpace(body)]++
		}
		streak = 0
		time.Sleep(100 * time.Millisecond)
	}
	f.T.Fatalf("%s from %s: never %d answers in a row containing %q in %d tries; answers seen: %v", addr, ns, run, want, attempts, seen)
}

// Host is the host part of an address as a prefix of one address.
func Host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// Owner asks from the LAN client who answers for addr and returns that node
// (1..N); it fails the test when more than one node answers (split brain)
// and returns 0 when none does.
func (f *F) Owner(addr netip.Addr) int {
	f.T.Helper()
	macs, err := lab.AnsweringMACs(f.Ctx, f.ClientNS(), addr)
	if err != nil {
		f.T.Fatalf("who has %s: %v", addr, err)
	}
	if len(macs) > 1 {
		f.T.Fatalf("split brain: %d MACs answer for %s: %v", len(macs), addr, macs)
	}
	if len(macs) == 0 {
		return 0
	}
	n := f.NodeByMAC(macs[0])
	if n == 0 {
		f.T.Fatalf("%s is answered by %s, which is no node's", addr, macs[0])
	}
	return n
}

// WaitOwner waits until exactly one node answers for addr and that node
// satisfies ok, and returns it.
func (f *F) WaitOwner(addr netip.Addr, what string, ok func(n int) bool) int {
	f.T.Helper()
	var owner int
	f.Eventually(fmt.Sprintf("%s is answered by %s", addr, what), 30, 200*time.Millisecond, func() error {
		owner = f.Owner(addr)
		if owner == 0 || !ok(owner) {
			return fmt.Errorf("answered by node %d", owner)
		}
		return nil
	})
	return owner
}

// Pool creates an IPPool of prefixes that only Services naming it use
// (autoAssign false); mutate sets its l2 or bgp section. It is deleted when
// the test ends, and gone before the next test begins.
func (f *F) Pool(name string, prefixes []netip.Prefix, mutate func(*v1alpha1.IPPoolSpec)) {
	f.T.Helper()
	spec := v1alpha1.IPPoolSpec{AutoAssign: new(bool)}
	for _, p := range prefixes {
		spec.Addresses = append(spec.Addresses, v1alpha1.AddressRange(p.String()))
	}
	if mutate != nil {
		mutate(&spec)
	}
	if err := f.CreatePool(f.Ctx, name, spec); err != nil {
		f.T.Fatal(err)
	}
	f.pools = append(f.pools, name)
	f.Cleanup(func(ctx context.Context) {
		_ = f.Dynamic.Resource(v1alpha1.IPPoolResource).Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// DualStackService creates a RequireDualStack Service that takes its
// addresses from pool, with a ready endpoint on each of nodes (named
// <name>-n<node>), and waits for both addresses.
func (f *F) DualStackService(name, pool string, nodes []int, mutate func(*corev1.Service)) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	svc := f.Service(name, func(s *corev1.Service) {
		policy := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		s.Annotations = map[string]string{v1alpha1.AnnotationPool: pool}
		if mutate != nil {
			mutate(s)
		}
	})
	for _, n := range nodes {
		f.Endpoint(svc, fmt.Sprintf("%s-n%d", name, n), n)
	}
	addrs, err := f.WaitIngress(f.Ctx, svc, 2, 30*time.Second)
	if err != nil {
		f.T.Fatal(err)
	}
	return svc, addrs
}
