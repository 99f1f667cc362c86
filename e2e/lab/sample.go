package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// CreatePool creates an IPPool.
func (l *Lab) CreatePool(ctx context.Context, name string, spec v1alpha1.IPPoolSpec) error {
	p := &v1alpha1.IPPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       spec,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	_, err = l.Dynamic.Resource(v1alpha1.IPPoolResource).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create IPPool %s: %w", name, err)
	}
	return nil
}

// CreateBGPPeer creates a BGPPeer.
func (l *Lab) CreateBGPPeer(ctx context.Context, name string, spec v1alpha1.BGPPeerSpec) error {
	p := &v1alpha1.BGPPeer{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "BGPPeer"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       spec,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	if _, err := l.Dynamic.Resource(v1alpha1.BGPPeerResource).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create BGPPeer %s: %w", name, err)
	}
	return nil
}

// LabelBGPPeer sets labels on a BGPPeer (for an IPPool's bgp.peerSelector).
func (l *Lab) LabelBGPPeer(ctx context.Context, name string, labels map[string]string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	if _, err := l.Dynamic.Resource(v1alpha1.BGPPeerResource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label BGPPeer %s: %w", name, err)
	}
	return nil
}

// DeleteBGPPeer deletes a BGPPeer.
func (l *Lab) DeleteBGPPeer(ctx context.Context, name string) error {
	return l.Dynamic.Resource(v1alpha1.BGPPeerResource).Delete(ctx, name, metav1.DeleteOptions{})
}

// WaitIngress waits until svc's status lists want addresses and returns them.
func (l *Lab) WaitIngress(ctx context.Context, svc types.NamespacedName, want int, timeout time.Duration) ([]netip.Addr, error) {
	var addrs []netip.Addr
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		s, err := l.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		addrs = addrs[:0]
		for _, in := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil {
				addrs = append(addrs, a)
			}
		}
		return len(addrs) >= want, nil
	})
	if err != nil {
		return addrs, fmt.Errorf("Service %s has %d of %d addresses: %w", svc, len(addrs), want, err)
	}
	return addrs, nil
}

// Sample is what make lab shows: an L2 IPPool on the LAN, a dual-stack
// Service with two endpoints, its addresses from ironlb-ccm, announced by
// the speakers, and a curl from the LAN client and from the external client
// (through the router) that reaches it; then the same over BGP.
func (l *Lab) Sample(ctx context.Context, out io.Writer) error {
	pool := l.L2Pool()
	if err := l.CreatePool(ctx, "sample", v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{v1alpha1.AddressRange(pool[0].String()), v1alpha1.AddressRange(pool[1].String())},
		L2:        &v1alpha1.L2Advertisement{},
	}); err != nil {
		return err
	}
	dual := corev1.IPFamilyPolicyPreferDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &dual,
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	key := types.NamespacedName{Namespace: "default", Name: "hello"}
	backends, err := l.sampleService(ctx, svc, []int{2, 3})
	if err != nil {
		return err
	}
	addrs, err := l.WaitIngress(ctx, key, 2, 30*time.Second)
	if err != nil {
		return err
	}
	s, err := l.WaitCondition(ctx, key, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nService default/hello (type LoadBalancer, %s) with %s:\n", *s.Spec.IPFamilyPolicy, backends)
	fmt.Fprintf(out, "  cluster IPs   %s\n", strings.Join(s.Spec.ClusterIPs, ", "))
	var ext []string
	for _, a := range addrs {
		ext = append(ext, a.String())
	}
	fmt.Fprintf(out, "  external IPs  %s   (from IPPool sample)\n", strings.Join(ext, ", "))
	for _, c := range s.Status.Conditions {
		fmt.Fprintf(out, "  condition     %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	fmt.Fprintln(out)
	for _, ns := range []string{l.ClientNS(), l.ExternalNS()} {
		for _, a := range addrs {
			fmt.Fprintf(out, "$ ip netns exec %s curl %s\n", ns, strings.Join(CurlArgs(a, 80, "/"), " "))
			body, err := CurlUntil(ctx, ns, a, 80, "endpoint=", 40, 250*time.Millisecond)
			if err != nil {
				return err
			}
			fmt.Fprint(out, body)
		}
	}
	if err := l.sampleBGP(ctx, out); err != nil {
		return err
	}
	if kubectl := filepath.Join(l.dir, "bin", "kubectl"); fileExists(kubectl) {
		for _, args := range [][]string{{"get", "services", "-o", "wide"}, {"get", "ippools"}, {"get", "bgppeers", "-o", "jsonpath={range .items[*].status.nodes[*]}{.node}{\" \"}{.state}{\" \"}{.prefixesAdvertised}{\"\\n\"}{end}"}} {
			fmt.Fprintf(out, "\n$ kubectl %s\n", strings.Join(args, " "))
			got, err := run(ctx, kubectl, append([]string{"--kubeconfig", l.Kubeconfig}, args...)...)
			if err != nil {
				return err
			}
			fmt.Fprint(out, got)
		}
	}
	return nil
}

// sampleBGP adds the BGP half of make lab: a BGPPeer for the router, a pool
// in the routed range (outside every subnet) and a Service there, reached
// from the external client only through the routes the speakers advertise.
func (l *Lab) sampleBGP(ctx context.Context, out io.Writer) error {
	if err := l.CreateBGPPeer(ctx, "lab-router", v1alpha1.BGPPeerSpec{
		Address: l.RouterLAN()[0].String(), ASN: RouterASN, LocalASN: NodeASN,
		HoldTime:      &metav1.Duration{Duration: 3 * time.Second},
		KeepaliveTime: &metav1.Duration{Duration: time.Second},
		ConnectTime:   &metav1.Duration{Duration: time.Second},
	}); err != nil {
		return err
	}
	routed := l.RoutedPool()
	if err := l.CreatePool(ctx, "sample-bgp", v1alpha1.IPPoolSpec{
		Addresses:     []v1alpha1.AddressRange{v1alpha1.AddressRange(routed[0].String())},
		AvoidBuggyIPs: true,
		AutoAssign:    new(bool),
		BGP:           &v1alpha1.BGPAdvertisement{Communities: []v1alpha1.Community{"64513:100"}},
	}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hello-routed", Namespace: "default", Annotations: map[string]string{v1alpha1.AnnotationPool: "sample-bgp"}},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	key := types.NamespacedName{Namespace: "default", Name: "hello-routed"}
	backends, err := l.sampleService(ctx, svc, []int{1, 3})
	if err != nil {
		return err
	}
	addrs, err := l.WaitIngress(ctx, key, 1, 30*time.Second)
	if err != nil {
		return err
	}
	s, err := l.WaitCondition(ctx, key, v1alpha1.ConditionAnnounced, metav1.ConditionTrue, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nService default/hello-routed, from IPPool sample-bgp (BGP), %s:\n", backends)
	for _, c := range s.Status.Conditions {
		fmt.Fprintf(out, "  condition     %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	var route string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		route, err = l.Vtysh(ctx, "show ip route "+addrs[0].String()+"/32")
		return err == nil && strings.Count(route, " via ") >= l.Nodes, nil
	})
	if err != nil {
		return fmt.Errorf("the router has no route through every node for %s: %s", addrs[0], route)
	}
	fmt.Fprintf(out, "\n$ ip netns exec %s vtysh --vty_socket %s -c 'show ip route %s/32'\n%s\n", l.RouterNS(), l.frrDir(), addrs[0], strings.TrimSpace(route))
	fmt.Fprintf(out, "$ ip netns exec %s curl %s\n", l.ExternalNS(), strings.Join(CurlArgs(addrs[0], 80, "/"), " "))
	body, err := CurlUntil(ctx, l.ExternalNS(), addrs[0], 80, "endpoint=", 40, 250*time.Millisecond)
	if err != nil {
		return err
	}
	fmt.Fprint(out, body)
	return nil
}

// sampleService creates a sample Service (port 80 to 8080) with two
// backends and says what they are. On real nodes they are echo pods of a
// Deployment named after the Service, which it selects (the EndpointSlice
// controller lists them); on process nodes, echo endpoints that the lab
// runs on the given nodes and lists itself.
func (l *Lab) sampleService(ctx context.Context, svc *corev1.Service, nodes []int) (string, error) {
	if l.state.Kubelet {
		svc.Spec.Selector = map[string]string{"app": svc.Name}
	}
	if _, err := l.Client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create Service %s: %w", svc.Name, err)
	}
	if l.state.Kubelet {
		if err := l.EchoDeployment(ctx, svc.Namespace, svc.Name, int32(len(nodes)), 8080); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d echo pods of Deployment %s", len(nodes), svc.Name), nil
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	var on []string
	for i, n := range nodes {
		if _, err := l.AddEndpoint(ctx, key, fmt.Sprintf("%s-%d", strings.TrimPrefix(svc.Name, "hello-"), i+1), n); err != nil {
			return "", err
		}
		on = append(on, l.NodeName(n))
	}
	return "endpoints on " + strings.Join(on, " and "), nil
}

// WaitCondition waits until svc has condition typ with status want and returns the Service.
func (l *Lab) WaitCondition(ctx context.Context, svc types.NamespacedName, typ string, want metav1.ConditionStatus, timeout time.Duration) (*corev1.Service, error) {
	var got *corev1.Service
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		s, err := l.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = s
		for _, c := range s.Status.Conditions {
			if c.Type == typ {
				last = fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
				return c.Status == want, nil
			}
		}
		last = "no such condition"
		return false, nil
	})
	if err != nil {
		return got, fmt.Errorf("Service %s: condition %s is not %s (last: %s): %w", svc, typ, want, last, err)
	}
	return got, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
