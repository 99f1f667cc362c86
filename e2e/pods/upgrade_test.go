package pods

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/testenv"
)

// The tests of this file change the install itself: they run last (TestUninstall
// the very last), after the tests of the other files.

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// upgradeVersion is the second version of ironlb's images an upgrade rolls to.
const upgradeVersion = "v0.1.1"

// prober requests http://addr/ from namespace ns every 50 ms, each request
// on a new connection with a 2 s limit, and counts the requests and the
// failures, as a user's client would see them. A connection the other end
// reset after it was established is counted apart (resets): what a move of
// an L2 address does to the one connection open at that moment (see the
// README's Upgrade).
type prober struct {
	ns   string
	addr netip.Addr
	// resetsAllowed: a reset of an open connection is tolerated (L2).
	resetsAllowed        bool
	sent, failed, resets atomic.Int64
	mu                   sync.Mutex
	failures             []string
}

func (p *prober) run(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := p.once()
		if ctx.Err() != nil {
			return
		}
		p.sent.Add(1)
		if err != nil {
			p.failed.Add(1)
			if errors.Is(err, syscall.ECONNRESET) {
				p.resets.Add(1)
			}
			p.mu.Lock()
			p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			p.mu.Unlock()
		}
	}
}

func (p *prober) once() error {
	conn, err := lab.DialTCP(p.ns, netip.AddrPortFrom(p.addr, 80), 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", p.addr); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "endpoint=") {
		return fmt.Errorf("%s: %q", resp.Status, body)
	}
	return nil
}

func (p *prober) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("%s from %s: %d requests, %d failed (%d of them an open connection reset)", p.addr, p.ns, p.sent.Load(), p.failed.Load(), p.resets.Load())
	if len(p.failures) > 0 {
		s += fmt.Sprintf(" (first: %s)", p.failures[0])
	}
	return s
}

// addressWatch reads the Services' addresses every 200 ms and counts every
// reading that differs from the first.
type addressWatch struct {
	first   map[types.NamespacedName][]string
	changes []string
}

func ingress(f *framework.F, key types.NamespacedName) ([]string, error) {
	s, err := f.Client.CoreV1().Services(key.Namespace).Get(f.Ctx, key.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, i := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, i.IP)
	}
	slices.Sort(ips)
	return ips, nil
}

func watchAddresses(ctx context.Context, f *framework.F, keys ...types.NamespacedName) (*addressWatch, func()) {
	w := &addressWatch{first: map[types.NamespacedName][]string{}}
	for _, k := range keys {
		ips, err := ingress(f, k)
		if err != nil {
			f.T.Fatal(err)
		}
		w.first[k] = ips
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, k := range keys {
				if ips, err := ingress(f, k); err == nil && !slices.Equal(ips, w.first[k]) {
					w.changes = append(w.changes, fmt.Sprintf("%s %s: %v (was %v)", time.Now().Format("15:04:05.000"), k, ips, w.first[k]))
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w, func() { cancel(); <-done }
}

// bgpService creates the router's BGPPeer (once per test) and a Service whose
// IPv4 address the nodes advertise to it, and waits until the router routes
// it through every node.
func bgpService(f *framework.F, name string, pool int) (types.NamespacedName, netip.Addr) {
	f.T.Helper()
	peer := "router-" + name
	err := f.CreateBGPPeer(f.Ctx, peer, v1alpha1.BGPPeerSpec{
		Address: f.RouterLAN()[0].String(), ASN: lab.RouterASN, LocalASN: lab.NodeASN,
		HoldTime:      &metav1.Duration{Duration: 3 * time.Second},
		KeepaliveTime: &metav1.Duration{Duration: time.Second},
		ConnectTime:   &metav1.Duration{Duration: time.Second},
		// The router keeps a node's routes while its speaker restarts: no
		// next hop changes, so the router's ECMP moves no connection.
		GracefulRestart: true,
	})
	if err != nil {
		f.T.Fatal(err)
	}
	f.Cleanup(func(ctx context.Context) { _ = f.DeleteBGPPeer(ctx, peer) })
	key, addrs := podService(f, name, f.TestPool(pool)[:1], func(s *v1alpha1.IPPoolSpec) { s.BGP = &v1alpha1.BGPAdvertisement{} }, 2)
	f.Eventually("the router routes "+addrs[0].String()+" through every node", 120, 250*time.Millisecond, func() error {
		routes, err := f.RouterRoutes(f.Ctx, false)
		if err != nil {
			return err
		}
		r := routes[framework.Host(addrs[0])]
		if len(r.NextHops) != f.Nodes {
			return fmt.Errorf("route %v", r)
		}
		return nil
	})
	return key, addrs[0]
}

// TestUpgradeLosesNoRequest: ironlb's images of a second version, loaded
// into the nodes, and deploy/default applied again with them (kubectl apply
// --server-side, as the README's upgrade says): the Deployment and the
// DaemonSet roll to the new images one pod at a time, while a client that
// requests every L2 address (IPv4 and IPv6, from the LAN) and a BGP address
// (from behind the router, a BGPPeer with gracefulRestart) every 50 ms loses
// no request, and no Service's address changes. One exception, counted and
// logged: when an L2 address moves (its owner's speaker restarts), the one
// connection open at that moment may be reset (a known limit, README
// "Upgrade"); no new connection ever fails.
func TestUpgradeLosesNoRequest(t *testing.T) {
	f := framework.New(t)
	keys, targets := upgradeServices(f, "up", 2, 3)
	manifest, err := lab.DeployYAML(upgradeVersion)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ironlb.yaml")
	if err := os.WriteFile(file, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	rollWithProbes(f, targets, keys, func() {
		if out, err := kubectl(f, "apply", "--server-side", "--field-manager=ironlb-lab", "-f", file); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
	})
}

// upgradeServices makes what an upgrade test watches: an L2 Service (both
// families, pool l2pool) and a BGP Service (pool bgpPool) in front of echo
// pods, both reached once, and ironlb's images of upgradeVersion loaded into
// the nodes. It returns the Services and a prober for each address; the
// L2 ones allow the reset of an open connection when their address moves.
func upgradeServices(f *framework.F, name string, l2pool, bgpPool int) ([]types.NamespacedName, []*prober) {
	f.T.Helper()
	l2, l2addrs := echoService(f, name+"-l2", l2pool, 2)
	bgp, bgpAddr := bgpService(f, name+"-bgp", bgpPool)
	for _, a := range l2addrs {
		f.Curl(f.ClientNS(), a, "endpoint=", 40)
	}
	f.Curl(f.ExternalNS(), bgpAddr, "endpoint=", 40)
	if err := f.LoadImages(f.Ctx, upgradeVersion); err != nil {
		f.T.Fatal(err)
	}
	return []types.NamespacedName{l2, bgp}, []*prober{
		{ns: f.ClientNS(), addr: l2addrs[0], resetsAllowed: true},
		{ns: f.ClientNS(), addr: l2addrs[1], resetsAllowed: true},
		{ns: f.ExternalNS(), addr: bgpAddr},
	}
}

// rollWithProbes runs roll, which starts a rollout of ironlb to
// upgradeVersion, while the probers request their addresses every 50 ms, and
// waits until every pod runs that version and is Ready. It fails the test if
// any request failed or any of the Services' addresses changed meanwhile.
func rollWithProbes(f *framework.F, probers []*prober, keys []types.NamespacedName, roll func()) {
	t := f.T
	t.Helper()
	ctx, stop := context.WithCancel(f.Ctx)
	var wg sync.WaitGroup
	for _, p := range probers {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(ctx) }()
	}
	watch, stopWatch := watchAddresses(ctx, f, keys...)
	defer func() { stop(); wg.Wait(); stopWatch() }()
	time.Sleep(2 * time.Second)

	began := time.Now()
	roll()
	if err := f.WaitRolledOut(f.Ctx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("rolled out in %s", time.Since(began).Round(100*time.Millisecond))
	pods, err := f.Client.CoreV1().Pods(lab.Namespace).List(f.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if img := p.Spec.Containers[0].Image; !strings.HasSuffix(img, ":"+upgradeVersion) || !ready(p) {
			t.Errorf("pod %s runs %s, ready=%t: want %s, ready", p.Name, img, ready(p), upgradeVersion)
		}
	}
	time.Sleep(3 * time.Second)
	stop()
	wg.Wait()
	stopWatch()
	for _, p := range probers {
		t.Log(p)
		if p.sent.Load() < 100 {
			t.Errorf("%s: too few requests to say anything", p)
		}
		lost := p.failed.Load()
		if p.resetsAllowed {
			lost -= p.resets.Load()
		}
		if lost > 0 {
			t.Errorf("requests lost during the upgrade: %s", p)
		}
	}
	if len(watch.changes) > 0 {
		t.Errorf("addresses changed during the upgrade: %v", watch.changes)
	}
}

// TestUninstallLeavesNothing follows the README's uninstall: the
// LoadBalancer Services deleted while ironlb-ccm runs (they go: their
// finalizer is removed), then kubectl delete -k deploy/default. Afterwards
// no Service carries ironlb's finalizer, no address is answered (ARP, NDP)
// or routed (BGP), and the namespace, CRDs, ClusterRoles, bindings and
// admission policies are gone.
func TestUninstallLeavesNothing(t *testing.T) {
	f := framework.New(t)
	l2, l2addrs := echoService(f, "gone-l2", 4, 1)
	bgp, bgpAddr := bgpService(f, "gone-bgp", 5)
	f.Curl(f.ClientNS(), l2addrs[0], "endpoint=", 40)
	f.Curl(f.ExternalNS(), bgpAddr, "endpoint=", 40)
	for _, key := range []types.NamespacedName{l2, bgp} {
		if out, err := kubectl(f, "delete", "service", "-n", key.Namespace, key.Name, "--timeout=60s"); err != nil {
			t.Fatalf("kubectl delete service %s: %v\n%s", key, err, out)
		}
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(f, "delete", "-k", filepath.Join(root, lab.DeployDir), "--timeout=120s"); err != nil {
		t.Fatalf("kubectl delete -k %s: %v\n%s", lab.DeployDir, err, out)
	}

	nothingLeft(f, l2addrs, bgpAddr)
}

// nothingLeft checks that ironlb is gone without a trace: no Service with its
// finalizer, no namespace, CRD, ClusterRole, binding, admission policy or pod
// of it, and nobody answering (ARP, NDP) or routing (BGP) the addresses it
// announced.
func nothingLeft(f *framework.F, l2addrs []netip.Addr, bgpAddr netip.Addr) {
	t := f.T
	t.Helper()
	services, err := f.Client.CoreV1().Services("").List(f.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services.Items {
		if slices.Contains(s.Finalizers, "service.kubernetes.io/load-balancer-cleanup") {
			t.Errorf("Service %s/%s still has ironlb's finalizer", s.Namespace, s.Name)
		}
	}
	if _, err := f.Client.CoreV1().Namespaces().Get(f.Ctx, lab.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s is still there (%v)", lab.Namespace, err)
	}
	selector := metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=ironlb"}
	crds, err := f.Dynamic.Resource(crdResource).List(f.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crds.Items {
		if strings.HasSuffix(c.GetName(), ".ironlb.io") {
			t.Errorf("CRD %s is still there", c.GetName())
		}
	}
	if crs, err := f.Client.RbacV1().ClusterRoles().List(f.Ctx, selector); err != nil || len(crs.Items) > 0 {
		t.Errorf("ClusterRoles of ironlb left: %d (%v)", len(crs.Items), err)
	}
	if crbs, err := f.Client.RbacV1().ClusterRoleBindings().List(f.Ctx, selector); err != nil || len(crbs.Items) > 0 {
		t.Errorf("ClusterRoleBindings of ironlb left: %d (%v)", len(crbs.Items), err)
	}
	if vaps, err := f.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(f.Ctx, selector); err != nil || len(vaps.Items) > 0 {
		t.Errorf("ValidatingAdmissionPolicies of ironlb left: %d (%v)", len(vaps.Items), err)
	}
	if bs, err := f.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().List(f.Ctx, selector); err != nil || len(bs.Items) > 0 {
		t.Errorf("ValidatingAdmissionPolicyBindings of ironlb left: %d (%v)", len(bs.Items), err)
	}
	// Nothing answers or routes the addresses any more.
	f.Eventually("no node answers the former L2 addresses", 20, 500*time.Millisecond, func() error {
		for _, a := range l2addrs {
			macs, err := lab.AnsweringMACs(f.Ctx, f.ClientNS(), a)
			if err != nil {
				return err
			}
			if len(macs) > 0 {
				return fmt.Errorf("%s answered by %v", a, macs)
			}
		}
		return nil
	})
	f.Eventually("the router has no route for "+bgpAddr.String(), 40, 250*time.Millisecond, func() error {
		routes, err := f.RouterRoutes(f.Ctx, false)
		if err != nil {
			return err
		}
		if r, ok := routes[framework.Host(bgpAddr)]; ok {
			return fmt.Errorf("route %v", r)
		}
		return nil
	})
	if pods, err := f.Client.CoreV1().Pods("").List(f.Ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=ironlb"}); err != nil || len(pods.Items) > 0 {
		t.Errorf("pods of ironlb left: %d (%v)", len(pods.Items), err)
	}
}

// helm runs the pinned helm with the lab's admin kubeconfig and a home of its own.
func helm(f *framework.F, args ...string) (string, error) {
	f.T.Helper()
	bins, err := testenv.Binaries(f.Ctx, "helm")
	if err != nil {
		f.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.Ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Helm, args...)
	home := filepath.Join(f.T.TempDir(), "helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+f.Kubeconfig, "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelmInstallUpgradeUninstall (after the kustomize install is gone): the
// chart installed with its default values, as the README says, runs and
// serves; `helm upgrade` to the second version loses no request and changes no
// address; the README's Helm uninstall (Services first, helm uninstall, the
// CRDs, the namespace) leaves nothing.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	f := framework.New(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "helm", "ironlb")
	if out, err := helm(f, "install", "ironlb", chart, "--namespace", lab.Namespace, "--create-namespace"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	if err := f.WaitRolledOut(f.Ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	keys, targets := upgradeServices(f, "helm", 6, 6)
	rollWithProbes(f, targets, keys, func() {
		if out, err := helm(f, "upgrade", "ironlb", chart, "--namespace", lab.Namespace,
			"--set", "images.ccm.tag="+upgradeVersion, "--set", "images.speaker.tag="+upgradeVersion); err != nil {
			t.Fatalf("helm upgrade: %v\n%s", err, out)
		}
	})

	for _, key := range keys {
		if out, err := kubectl(f, "delete", "service", "-n", key.Namespace, key.Name, "--timeout=60s"); err != nil {
			t.Fatalf("kubectl delete service %s: %v\n%s", key, err, out)
		}
	}
	if out, err := helm(f, "uninstall", "ironlb", "--namespace", lab.Namespace, "--wait"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if out, err := kubectl(f, "delete", "-f", filepath.Join(chart, "crds"), "--timeout=120s"); err != nil {
		t.Fatalf("kubectl delete -f crds: %v\n%s", err, out)
	}
	if out, err := kubectl(f, "delete", "namespace", lab.Namespace, "--timeout=120s"); err != nil {
		t.Fatalf("kubectl delete namespace: %v\n%s", err, out)
	}
	nothingLeft(f, []netip.Addr{targets[0].addr, targets[1].addr}, targets[2].addr)
}
