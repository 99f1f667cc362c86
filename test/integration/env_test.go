// Package integration runs the real ironlb-ccm binary against a real kube-apiserver and etcd and
// checks what a user sees on Services and IPPools.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/testenv"
)

// Bounds of every wait in these tests: generous for a loaded 2-core machine, never endless.
const (
	waitTimeout = 30 * time.Second
	pollEvery   = 50 * time.Millisecond
)

var (
	repoRoot  string
	ccmBinary string
	bins      testenv.Bins
)

func TestMain(m *testing.M) {
	var err error
	if repoRoot, err = testenv.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmp, err := os.MkdirTemp("", "ironlb-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if bins, err = testenv.Binaries(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "build kube-apiserver and etcd:", err)
			return 1
		}
		ccmBinary = filepath.Join(tmp, "ironlb-ccm")
		if err := testenv.GoBuild(ctx, repoRoot, "./cmd/ironlb-ccm", ccmBinary); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// env is one control plane with ironlb's CRDs installed.
type env struct {
	t      *testing.T
	api    *testenv.APIServer
	client kubernetes.Interface
	dyn    dynamic.Interface
	ctx    context.Context
}

// newEnv gives the test an API server and etcd of its own. The tests run in parallel: each
// mostly waits for ironlb-ccm and its API server, so two at a time keep the cores busier than one.
func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	api := testenv.StartAPIServer(t, testenv.WithBinaries(bins))
	cfg := api.Config()
	e := &env{t: t, api: api, ctx: t.Context()}
	e.client = kubernetes.NewForConfigOrDie(cfg)
	e.dyn = dynamic.NewForConfigOrDie(cfg)
	if err := testenv.InstallCRDs(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// eventually polls cond until it holds, failing the test with cond's last words after waitTimeout.
func (e *env) eventually(what string, cond func() (bool, string)) {
	e.t.Helper()
	e.within(waitTimeout, what, cond)
}

// within polls cond until it holds, failing the test with cond's last words after timeout.
func (e *env) within(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for i := 0; time.Now().Before(deadline) && i < int(timeout/pollEvery); i++ {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(pollEvery)
	}
	e.t.Fatalf("timed out waiting for %s: %s", what, last)
}

// ccm is one ironlb-ccm process.
type ccm struct{ *testenv.Process }

// startCCM runs ironlb-ccm with short leader election timers so that a leader change is quick.
func (e *env) startCCM(name string, args ...string) *ccm {
	e.t.Helper()
	all := append([]string{
		"--kubeconfig=" + e.api.KubeconfigPath(),
		"--secure-port=0",
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
		"--leader-elect-lease-duration=3s",
		"--leader-elect-renew-deadline=2s",
		"--leader-elect-retry-period=500ms",
		"--v=2",
	}, args...)
	p, err := testenv.StartProcess(name, ccmBinary, filepath.Join(e.t.TempDir(), name+".log"), all...)
	if err != nil {
		e.t.Fatalf("start ironlb-ccm: %v", err)
	}
	e.t.Cleanup(func() {
		p.Stop()
		if e.t.Failed() {
			e.t.Logf("last lines of %s's log:\n%s", name, p.Tail(40))
		}
	})
	return &ccm{p}
}

// pool creates an IPPool.
func (e *env) pool(name string, spec v1alpha1.IPPoolSpec) {
	e.t.Helper()
	if err := e.createPool(name, spec); err != nil {
		e.t.Fatalf("create IPPool %s: %v", name, err)
	}
}

func (e *env) createPool(name string, spec v1alpha1.IPPoolSpec) error {
	p := &v1alpha1.IPPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       spec,
	}
	obj, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	_, err = e.dyn.Resource(v1alpha1.IPPoolResource).Create(e.ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	return err
}

func (e *env) getPool(name string) *v1alpha1.IPPool {
	e.t.Helper()
	u, err := e.dyn.Resource(v1alpha1.IPPoolResource).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get IPPool %s: %v", name, err)
	}
	p := &v1alpha1.IPPool{}
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// updatePool changes the pool's spec as a user's read-modify-write does: on
// a conflict (ironlb-ccm writes the pool's status meanwhile) it reads again
// and applies mutate to the new version.
func (e *env) updatePool(name string, mutate func(*v1alpha1.IPPool)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := e.getPool(name)
		mutate(p)
		obj, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			return err
		}
		_, err = e.dyn.Resource(v1alpha1.IPPoolResource).Update(e.ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatalf("update IPPool %s: %v", name, err)
	}
}

func (e *env) deletePool(name string) {
	e.t.Helper()
	if err := e.dyn.Resource(v1alpha1.IPPoolResource).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete IPPool %s: %v", name, err)
	}
}

func (e *env) namespace(name string, labels map[string]string) {
	e.t.Helper()
	_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatalf("create namespace %s: %v", name, err)
	}
}

// svcOpt changes a Service before it is created.
type svcOpt func(*v1.Service)

func withClass(c string) svcOpt { return func(s *v1.Service) { s.Spec.LoadBalancerClass = &c } }
func withAnnotation(k, v string) svcOpt {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}
func withPolicy(p v1.IPFamilyPolicy, fams ...v1.IPFamily) svcOpt {
	return func(s *v1.Service) { s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &p, fams }
}
func withPorts(ports ...v1.ServicePort) svcOpt { return func(s *v1.Service) { s.Spec.Ports = ports } }
func tcp(port int32) v1.ServicePort {
	return v1.ServicePort{Name: fmt.Sprintf("tcp-%d", port), Protocol: v1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}
}
func udp(port int32) v1.ServicePort {
	return v1.ServicePort{Name: fmt.Sprintf("udp-%d", port), Protocol: v1.ProtocolUDP, Port: port, TargetPort: intstr.FromInt32(port)}
}

// service creates a LoadBalancer Service in the default namespace (ns/name to choose another).
func (e *env) service(key string, opts ...svcOpt) *v1.Service {
	e.t.Helper()
	ns, name := splitKey(key)
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type:     v1.ServiceTypeLoadBalancer,
			Ports:    []v1.ServicePort{tcp(80)},
			Selector: map[string]string{"app": name},
		},
	}
	for _, o := range opts {
		o(svc)
	}
	created, err := e.client.CoreV1().Services(ns).Create(e.ctx, svc, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create Service %s: %v", key, err)
	}
	return created
}

func splitKey(key string) (string, string) {
	if ns, name, ok := strings.Cut(key, "/"); ok {
		return ns, name
	}
	return "default", key
}

func (e *env) get(key string) *v1.Service {
	e.t.Helper()
	ns, name := splitKey(key)
	svc, err := e.client.CoreV1().Services(ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get Service %s: %v", key, err)
	}
	return svc
}

func (e *env) update(key string, mutate func(*v1.Service)) {
	e.t.Helper()
	for i := 0; i < 10; i++ {
		svc := e.get(key)
		mutate(svc)
		_, err := e.client.CoreV1().Services(svc.Namespace).Update(e.ctx, svc, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			e.t.Fatalf("update Service %s: %v", key, err)
		}
	}
	e.t.Fatalf("update Service %s: conflicts", key)
}

func (e *env) delete(key string) {
	e.t.Helper()
	ns, name := splitKey(key)
	if err := e.client.CoreV1().Services(ns).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete Service %s: %v", key, err)
	}
}

func ingressIPs(svc *v1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		out = append(out, ing.IP)
	}
	return out
}

func allocated(svc *v1.Service) *metav1.Condition {
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == v1alpha1.ConditionIPAllocated {
			return &svc.Status.Conditions[i]
		}
	}
	return nil
}

// waitIPs waits until the Service shows exactly want in its status, and returns it.
func (e *env) waitIPs(key string, want ...string) *v1.Service {
	e.t.Helper()
	var svc *v1.Service
	e.eventually(key+" to get "+strings.Join(want, ","), func() (bool, string) {
		svc = e.get(key)
		got := ingressIPs(svc)
		return strings.Join(got, ",") == strings.Join(want, ","), fmt.Sprintf("ingress %v, condition %s", got, condString(allocated(svc)))
	})
	return svc
}

// waitAllocated waits until the Service has n addresses and its condition is True.
func (e *env) waitAllocated(key string, n int) *v1.Service {
	e.t.Helper()
	var svc *v1.Service
	e.eventually(fmt.Sprintf("%s to get %d addresses", key, n), func() (bool, string) {
		svc = e.get(key)
		c := allocated(svc)
		return len(ingressIPs(svc)) == n && c != nil && c.Status == metav1.ConditionTrue,
			fmt.Sprintf("ingress %v, condition %s", ingressIPs(svc), condString(c))
	})
	return svc
}

// waitFailed waits until the Service's IPAllocated condition is False with reason.
func (e *env) waitFailed(key, reason string) *metav1.Condition {
	e.t.Helper()
	var cond *metav1.Condition
	e.eventually(key+" to fail with "+reason, func() (bool, string) {
		cond = allocated(e.get(key))
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == reason, condString(cond)
	})
	return cond
}

func condString(c *metav1.Condition) string {
	if c == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}

// waitEvent waits for an event with reason on the object and returns its message.
func (e *env) waitEvent(key, reason string) string {
	e.t.Helper()
	ns, name := splitKey(key)
	msg := ""
	e.eventually(fmt.Sprintf("event %s on %s", reason, key), func() (bool, string) {
		evs := e.events(ns, name)
		for _, ev := range evs {
			if ev.Reason == reason {
				msg = ev.Message
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %v", eventReasons(evs))
	})
	return msg
}

func (e *env) events(ns, name string) []v1.Event {
	e.t.Helper()
	sel := fields.Set{"involvedObject.name": name, "involvedObject.kind": "Service"}.AsSelector().String()
	list, err := e.client.CoreV1().Events(ns).List(e.ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		e.t.Fatalf("list events: %v", err)
	}
	return list.Items
}

func eventReasons(evs []v1.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type+"/"+ev.Reason)
	}
	return out
}

// settle gives ironlb-ccm time to act on what the test just did, before the test checks that
// something did NOT happen: a Service created afterwards has been served, and then a second
// has passed (workers run in parallel, so order alone proves nothing).
func (e *env) settle(marker string, opts ...svcOpt) {
	e.t.Helper()
	e.service(marker, opts...)
	e.waitAllocated(marker, 1)
	time.Sleep(time.Second)
}

func ptr[T any](v T) *T { return &v }
