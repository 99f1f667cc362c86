package testenv_test

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/internal/testenv"
)

func TestStartAPIServer_DualStackLoadBalancerServiceGetsClusterIPsInServiceRanges(t *testing.T) {
	s := testenv.StartAPIServer(t)
	cs, err := kubernetes.NewForConfig(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "testenv-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	requireDualStack := corev1.IPFamilyPolicyRequireDualStack
	svc, err := cs.CoreV1().Services(ns.Name).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &requireDualStack,
			Selector:       map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}

	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("clusterIPs = %v, want one per family", svc.Spec.ClusterIPs)
	}
	cidrs := s.ServiceCIDRs()
	for i, ip := range svc.Spec.ClusterIPs {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			t.Fatalf("clusterIPs[%d] = %q: %v", i, ip, err)
		}
		if !cidrs[i].Contains(addr) {
			t.Errorf("clusterIPs[%d] = %s, want it in %s", i, addr, cidrs[i])
		}
	}
	if got := svc.Spec.IPFamilies; len(got) != 2 || got[0] != corev1.IPv4Protocol || got[1] != corev1.IPv6Protocol {
		t.Errorf("ipFamilies = %v, want [IPv4 IPv6]", got)
	}
}

func TestStartAPIServer_KubeconfigReachesAServerThatReportsItsRelease(t *testing.T) {
	s := testenv.StartAPIServer(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", s.KubeconfigPath())
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through kubeconfig: %v", err)
	}
	// Without the version ldflags the server says v0.0.0-master, which
	// kubectl and version-gated clients reject.
	if !strings.HasPrefix(v.GitVersion, "v1.") || v.Major != "1" || !strings.HasPrefix(v.GitVersion, "v"+v.Major+"."+v.Minor+".") {
		t.Errorf("server version = %q (major %q, minor %q), want a v1.x release", v.GitVersion, v.Major, v.Minor)
	}
}

func TestStop_ServerNoLongerAnswers(t *testing.T) {
	s, err := testenv.Start(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // a second Stop, as t.Cleanup might add, is harmless

	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", u.Host)
	}
}

func TestStart_RejectedFlagFailsWithTheServersLastLogLines(t *testing.T) {
	_, err := testenv.Start(t.Context(), "", testenv.WithAPIServerArgs("--no-such-flag"))
	if err == nil {
		t.Fatal("Start succeeded with an unknown kube-apiserver flag")
	}
	if !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
		t.Errorf("error does not quote kube-apiserver's log:\n%v", err)
	}
}
