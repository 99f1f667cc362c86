// Package pods runs ironlb as users run it: on real nodes (a kubelet and
// containerd each), installed from deploy/default unchanged, as the pods of
// its Deployment and DaemonSet, in front of backends that are pods too.
package pods

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

func TestMain(m *testing.M) {
	framework.Main(m, lab.Config{Kubelet: true, CCM: true, Speakers: true, Kubectl: true})
}

// kubectl runs the lab's kubectl with its admin kubeconfig.
func kubectl(f *framework.F, args ...string) (string, error) {
	f.T.Helper()
	ctx, cancel := context.WithTimeout(f.Ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(f.Dir(), "bin", "kubectl"), append([]string{"--kubeconfig", f.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// speakerPods maps node names to the speaker pods on them.
func speakerPods(f *framework.F) map[string]corev1.Pod {
	f.T.Helper()
	pods, err := f.Client.CoreV1().Pods(lab.Namespace).List(f.Ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-speaker"})
	if err != nil {
		f.T.Fatal(err)
	}
	byNode := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			byNode[p.Spec.NodeName] = p
		}
	}
	return byNode
}

func ready(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestInstalledAsPods: deploy/default, applied unchanged, runs: two
// ironlb-ccm pods, one the leader by its Lease, which it reached through the
// kubernetes Service from a pod network; a speaker pod on every node, Ready.
func TestInstalledAsPods(t *testing.T) {
	f := framework.New(t)
	out, err := kubectl(f, "get", "pods", "-n", lab.Namespace, "-o", "wide")
	if err != nil {
		t.Fatalf("kubectl get pods: %v\n%s", err, out)
	}
	t.Logf("$ kubectl get pods -n %s -o wide\n%s", lab.Namespace, out)
	byNode := speakerPods(f)
	for n := 1; n <= f.Nodes; n++ {
		p, ok := byNode[f.NodeName(n)]
		if !ok || !ready(p) || p.Status.Phase != corev1.PodRunning {
			t.Errorf("node %s: no Running and Ready speaker pod (%v)", f.NodeName(n), p.Status.Phase)
		}
	}
	ccm, err := f.Client.CoreV1().Pods(lab.Namespace).List(f.Ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-ccm"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range ccm.Items {
		if !ready(p) {
			t.Errorf("ironlb-ccm pod %s is not Ready", p.Name)
		}
		if p.Spec.HostNetwork || p.Status.PodIP == "" {
			t.Errorf("ironlb-ccm pod %s: want a pod network address, got hostNetwork=%t podIP=%q", p.Name, p.Spec.HostNetwork, p.Status.PodIP)
		}
		names[p.Name] = true
	}
	if len(names) != 2 {
		t.Errorf("want 2 ironlb-ccm pods, got %d", len(names))
	}
	leases, err := f.Client.CoordinationV1().Leases(lab.Namespace).List(f.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := ""
	for _, l := range leases.Items {
		if h := l.Spec.HolderIdentity; h != nil {
			for name := range names {
				if strings.HasPrefix(*h, name) {
					held = l.Name + " held by " + *h
				}
			}
		}
	}
	if held == "" {
		t.Errorf("no Lease in %s is held by an ironlb-ccm pod", lab.Namespace)
	} else {
		t.Logf("leader: Lease %s", held)
	}
}

// echoService creates a dual-stack LoadBalancer Service in front of an echo
// Deployment of replicas pods, from an L2 pool of its own, and returns its
// addresses.
func echoService(f *framework.F, name string, pool int, replicas int32) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	return podService(f, name, f.L2TestPool(pool), func(s *v1alpha1.IPPoolSpec) { s.L2 = &v1alpha1.L2Advertisement{} }, replicas)
}

// podService creates a LoadBalancer Service of the families of prefixes in
// front of an echo Deployment of replicas pods, with a pool of its own of
// those prefixes (mutate says how it announces), and returns its addresses.
func podService(f *framework.F, name string, prefixes []netip.Prefix, mutate func(*v1alpha1.IPPoolSpec), replicas int32) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	f.Pool(name, prefixes, mutate)
	return poolService(f, name, name, len(prefixes) == 2, replicas)
}

// poolService creates a LoadBalancer Service (dual-stack or IPv4) from pool
// in front of an echo Deployment of replicas pods, and returns its
// addresses.
func poolService(f *framework.F, name, pool string, dualStack bool, replicas int32) (types.NamespacedName, []netip.Addr) {
	f.T.Helper()
	policy := corev1.IPFamilyPolicySingleStack
	families := []corev1.IPFamily{corev1.IPv4Protocol}
	if dualStack {
		policy = corev1.IPFamilyPolicyRequireDualStack
		families = append(families, corev1.IPv6Protocol)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.Namespace, Annotations: map[string]string{v1alpha1.AnnotationPool: pool}},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &policy,
			IPFamilies:     families,
			Selector:       map[string]string{"app": name},
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := f.Client.CoreV1().Services(f.Namespace).Create(f.Ctx, svc, metav1.CreateOptions{}); err != nil {
		f.T.Fatal(err)
	}
	if err := f.EchoDeployment(f.Ctx, f.Namespace, name, replicas, 8080); err != nil {
		f.T.Fatal(err)
	}
	key := types.NamespacedName{Namespace: f.Namespace, Name: name}
	addrs, err := f.WaitIngress(f.Ctx, key, len(families), 30*time.Second)
	if err != nil {
		f.T.Fatal(err)
	}
	return key, addrs
}

// TestServiceReachesPods: a LoadBalancer Service in front of echo pods gets
// its addresses, and a client on the LAN reaches every pod through them,
// over IPv4 and IPv6; the EndpointSlices are the EndpointSlice
// controller's, from the pods' readiness.
func TestServiceReachesPods(t *testing.T) {
	f := framework.New(t)
	key, addrs := echoService(f, "web", 0, 3)
	pods, err := f.Client.CoreV1().Pods(f.Namespace).List(f.Ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, p := range pods.Items {
		want[fmt.Sprintf("endpoint=%s node=%s", p.Name, p.Spec.NodeName)] = true
	}
	if len(want) != 3 {
		t.Fatalf("want 3 echo pods, got %d", len(want))
	}
	slices, err := f.Client.DiscoveryV1().EndpointSlices(f.Namespace).List(f.Ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + key.Name})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slices.Items {
		if m := s.Labels[discoveryv1.LabelManagedBy]; m != "endpointslice-controller.k8s.io" {
			t.Errorf("EndpointSlice %s is managed by %q, want the EndpointSlice controller", s.Name, m)
		}
	}
	for _, a := range addrs {
		seen := map[string]bool{}
		for i := 0; i < 60 && len(seen) < len(want); i++ {
			body := f.Curl(f.ClientNS(), a, "endpoint=", 40)
			line := strings.TrimSpace(body)
			if j := strings.Index(line, " client="); j > 0 {
				line = line[:j]
			}
			if !want[line] {
				t.Fatalf("%s answered %q, which is none of the Service's pods %v", a, body, want)
			}
			seen[line] = true
		}
		if len(seen) != len(want) {
			t.Errorf("%s: reached %d of the %d pods in 60 requests: %v", a, len(seen), len(want), seen)
		}
	}
}

// TestKindOverlay: deploy/overlays/kind, applied as the README tells kind
// users (kubectl apply --server-side -k, the images already on the nodes,
// the pool's range edited to the network's as the README says when
// Docker's subnet differs: here one of the lab's ranges), leaves ironlb
// Ready, and a Service of its pool reaches echo pods from the LAN.
func TestKindOverlay(t *testing.T) {
	f := framework.New(t)
	const overlay, pool = "deploy/overlays/kind", "kind"
	objs, err := lab.Render(overlay)
	if err != nil {
		t.Fatal(err)
	}
	prefix := f.L2TestPool(6)[0]
	var docs []string
	var want []string
	edited := false
	for _, o := range objs {
		if o.GetKind() == "IPPool" && o.GetName() == pool {
			if err := unstructured.SetNestedStringSlice(o.Object, []string{prefix.String()}, "spec", "addresses"); err != nil {
				t.Fatal(err)
			}
			edited = true
		}
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
		want = append(want, lab.ResourceName(o)+" serverside-applied")
	}
	if !edited {
		t.Fatalf("%s has no IPPool %q", overlay, pool)
	}
	f.Cleanup(func(ctx context.Context) {
		_ = f.Dynamic.Resource(v1alpha1.IPPoolResource).Delete(ctx, pool, metav1.DeleteOptions{})
	})
	file := filepath.Join(t.TempDir(), "kind.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	// As the lab's field manager: the lab installed deploy/default with it,
	// and the upgrade test later applies new images with it; a kind user's
	// kubectl applies to a cluster where no other manager owns these fields.
	out, err := kubectl(f, "apply", "--server-side", "--field-manager=ironlb-lab", "-f", file)
	if err != nil {
		t.Fatalf("kubectl apply --server-side (%s): %v\n%s", overlay, err, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl apply (%s) does not say %q:\n%s", overlay, w, out)
		}
	}
	if err := f.WaitRolledOut(f.Ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	_, addrs := poolService(f, "web", pool, false, 2)
	if len(addrs) != 1 || !prefix.Contains(addrs[0]) {
		t.Fatalf("Service of pool %s got %v, want one address in %s", pool, addrs, prefix)
	}
	if body := f.Curl(f.ClientNS(), addrs[0], "endpoint=web-", 40); !strings.Contains(body, "node=") {
		t.Errorf("curl %s: %q, want an echo pod's answer", addrs[0], body)
	}
}
