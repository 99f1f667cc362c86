package provider

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

const (
	testAnnGKE       = "networking.gke.io/load-balancer-type"
	testAnnAWS       = "service.beta.kubernetes.io/aws-load-balancer-internal"
	testAnnAzure     = "service.beta.kubernetes.io/azure-load-balancer-internal"
	testAnnIBM       = "service.kubernetes.io/ibm-load-balancer-cloud-provider-ip-type"
	testAnnOpenStack = "service.beta.kubernetes.io/openstack-internal-load-balancer"
	testAnnCCE       = "service.beta.kubernetes.io/cce-load-balancer-internal-vpc"
	testAnnTencent   = "service.kubernetes.io/qcloud-loadbalancer-internal-subnetid"
	testAnnAlibaba   = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type"
	testAnnOCI       = "service.beta.kubernetes.io/oci-load-balancer-internal"
)

// testLBService is a LoadBalancer Service in namespace "shop" with the given annotations.
func testLBService(ann map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: ann},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports:      []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
}

func testStrPtr(s string) *string { return &s }

func testAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// requireInvalidRequest checks that err is an *ipam.Error with reason InvalidRequest whose message
// contains every fragment.
func requireInvalidRequest(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want InvalidRequest mentioning %q", fragments)
	}
	var e *ipam.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *ipam.Error", err, err)
	}
	if e.Reason != ipam.ReasonInvalidRequest {
		t.Errorf("reason = %q, want %q", e.Reason, ipam.ReasonInvalidRequest)
	}
	for _, f := range fragments {
		if !strings.Contains(e.Message, f) {
			t.Errorf("message %q does not mention %q", e.Message, f)
		}
	}
}

func TestIsInternal_OwnAnnotation(t *testing.T) {
	tests := []struct {
		value   string
		want    bool
		wantErr bool
	}{
		{"true", true, false},
		{"false", false, false},
		{"True", true, false},
		{"yes", false, true},
		{"", false, true},
		{"internal", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			for _, honour := range []bool{true, false} {
				got, err := isInternal(map[string]string{v1alpha1.AnnotationInternal: tt.value}, honour)
				if tt.wantErr {
					if err == nil || !strings.Contains(err.Error(), v1alpha1.AnnotationInternal) {
						t.Errorf("honour=%v: error = %v, want one naming %s", honour, err, v1alpha1.AnnotationInternal)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Errorf("honour=%v: got (%v, %v), want (%v, nil)", honour, got, err, tt.want)
				}
			}
		})
	}
}

func TestIsInternal_OtherCloudsAnnotationsMeanInternalAndTheirOppositeExternal(t *testing.T) {
	tests := []struct {
		name  string
		ann   string
		value string
		want  bool
	}{
		{"GKE Internal", testAnnGKE, "Internal", true},
		{"GKE External", testAnnGKE, "External", false},
		{"GKE internal lower case", testAnnGKE, "internal", true},
		{"GKE INTERNAL upper case", testAnnGKE, "INTERNAL", true},
		{"GKE external lower case", testAnnGKE, "external", false},
		{"AWS true", testAnnAWS, "true", true},
		{"AWS false", testAnnAWS, "false", false},
		{"Azure true", testAnnAzure, "true", true},
		{"Azure false", testAnnAzure, "false", false},
		{"IBM private", testAnnIBM, "private", true},
		{"IBM public", testAnnIBM, "public", false},
		{"OpenStack true", testAnnOpenStack, "true", true},
		{"OpenStack false", testAnnOpenStack, "false", false},
		{"Huawei CCE true", testAnnCCE, "true", true},
		{"Huawei CCE false", testAnnCCE, "false", false},
		{"Tencent subnet id", testAnnTencent, "subnet-k3b8x0qe", true},
		{"Tencent other subnet id", testAnnTencent, "12345", true},
		{"Alibaba intranet", testAnnAlibaba, "intranet", true},
		{"Alibaba internet", testAnnAlibaba, "internet", false},
		{"OCI true", testAnnOCI, "true", true},
		{"OCI false", testAnnOCI, "false", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := isInternal(map[string]string{tt.ann: tt.value}, true)
			if err != nil || got != tt.want {
				t.Errorf("isInternal(%s=%q) = (%v, %v), want (%v, nil)", tt.ann, tt.value, got, err, tt.want)
			}
		})
	}
}

func TestIsInternal_OtherCloudsAnnotationsAreIgnoredWhenNotHonoured(t *testing.T) {
	for _, ann := range []map[string]string{
		{testAnnGKE: "Internal"},
		{testAnnAWS: "true"},
		{testAnnIBM: "private"},
		{testAnnTencent: "subnet-k3b8x0qe"},
		{testAnnAlibaba: "intranet"},
		{testAnnOCI: "true"},
		{testAnnAWS: "not-a-bool"}, // malformed, but not read at all
	} {
		got, err := isInternal(ann, false)
		if err != nil || got {
			t.Errorf("isInternal(%v, honour=false) = (%v, %v), want (false, nil)", ann, got, err)
		}
	}
}

func TestIsInternal_OwnAnnotationWinsOverOtherClouds(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want bool
	}{
		{"own false beats AWS true", map[string]string{v1alpha1.AnnotationInternal: "false", testAnnAWS: "true"}, false},
		{"own false beats GKE Internal", map[string]string{v1alpha1.AnnotationInternal: "false", testAnnGKE: "Internal"}, false},
		{"own true beats GKE External", map[string]string{v1alpha1.AnnotationInternal: "true", testAnnGKE: "External"}, true},
		{"own true beats malformed Azure", map[string]string{v1alpha1.AnnotationInternal: "true", testAnnAzure: "maybe"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := isInternal(tt.ann, true)
			if err != nil || got != tt.want {
				t.Errorf("got (%v, %v), want (%v, nil)", got, err, tt.want)
			}
		})
	}
}

func TestIsInternal_AnyOtherCloudSayingInternalMakesTheServiceInternal(t *testing.T) {
	got, err := isInternal(map[string]string{testAnnGKE: "External", testAnnAWS: "true"}, true)
	if err != nil || !got {
		t.Errorf("GKE External + AWS true: got (%v, %v), want (true, nil)", got, err)
	}
	got, err = isInternal(map[string]string{testAnnGKE: "External", testAnnAWS: "false", testAnnAlibaba: "internet"}, true)
	if err != nil || got {
		t.Errorf("all external: got (%v, %v), want (false, nil)", got, err)
	}
	got, err = isInternal(map[string]string{"example.com/unrelated": "true"}, true)
	if err != nil || got {
		t.Errorf("unrelated annotation: got (%v, %v), want (false, nil)", got, err)
	}
	got, err = isInternal(nil, true)
	if err != nil || got {
		t.Errorf("no annotations: got (%v, %v), want (false, nil)", got, err)
	}
}

func TestIsInternal_MalformedOtherCloudValueIsAnErrorNamingTheAnnotation(t *testing.T) {
	tests := []struct{ ann, value string }{
		{testAnnGKE, "Private"},
		{testAnnGKE, ""},
		{testAnnAWS, "yes"},
		{testAnnAzure, "internal"},
		{testAnnIBM, "internal"},
		{testAnnOpenStack, "on"},
		{testAnnCCE, "vpc"},
		{testAnnAlibaba, "vpc"},
		{testAnnOCI, "maybe"},
	}
	for _, tt := range tests {
		t.Run(tt.ann+"="+tt.value, func(t *testing.T) {
			_, err := isInternal(map[string]string{tt.ann: tt.value}, true)
			if err == nil {
				t.Fatalf("got no error")
			}
			if !strings.Contains(err.Error(), tt.ann) || !strings.Contains(err.Error(), `"`+tt.value+`"`) {
				t.Errorf("error %q does not name %s=%q", err, tt.ann, tt.value)
			}
		})
	}
}

func TestRequestFor_CopiesIdentityLabelsAndSharingKey(t *testing.T) {
	svc := testLBService(map[string]string{v1alpha1.AnnotationSharingKey: "dns"})
	svc.Labels = map[string]string{"app": "web"}
	nsLabels := map[string]string{"team": "shop"}
	got, err := requestFor(svc, nsLabels, true)
	if err != nil {
		t.Fatal(err)
	}
	want := ipam.Request{
		Service:         "shop/web",
		Namespace:       "shop",
		ServiceLabels:   map[string]string{"app": "web"},
		NamespaceLabels: map[string]string{"team": "shop"},
		Families:        []ipam.Family{ipam.IPv4},
		Policy:          ipam.SingleStack,
		SharingKey:      "dns",
		Ports:           []ipam.Port{{Protocol: "TCP", Port: 80}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request =\n%+v\nwant\n%+v", got, want)
	}
}

func TestRequestFor_FamiliesAndPolicyFollowTheSpecInOrder(t *testing.T) {
	single, prefer, require := v1.IPFamilyPolicySingleStack, v1.IPFamilyPolicyPreferDualStack, v1.IPFamilyPolicyRequireDualStack
	tests := []struct {
		name       string
		families   []v1.IPFamily
		policy     *v1.IPFamilyPolicy
		wantFams   []ipam.Family
		wantPolicy ipam.Policy
	}{
		{"no families (pre dual-stack) means IPv4 single stack", nil, nil, []ipam.Family{ipam.IPv4}, ipam.SingleStack},
		{"IPv4 single stack", []v1.IPFamily{v1.IPv4Protocol}, &single, []ipam.Family{ipam.IPv4}, ipam.SingleStack},
		{"IPv6 single stack", []v1.IPFamily{v1.IPv6Protocol}, &single, []ipam.Family{ipam.IPv6}, ipam.SingleStack},
		{"IPv4 first, prefer dual stack", []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}, &prefer, []ipam.Family{ipam.IPv4, ipam.IPv6}, ipam.PreferDualStack},
		{"IPv6 first, prefer dual stack", []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}, &prefer, []ipam.Family{ipam.IPv6, ipam.IPv4}, ipam.PreferDualStack},
		{"IPv6 first, require dual stack", []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}, &require, []ipam.Family{ipam.IPv6, ipam.IPv4}, ipam.RequireDualStack},
		{"prefer dual stack on a single-stack cluster", []v1.IPFamily{v1.IPv4Protocol}, &prefer, []ipam.Family{ipam.IPv4}, ipam.PreferDualStack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := testLBService(nil)
			svc.Spec.IPFamilies = tt.families
			svc.Spec.IPFamilyPolicy = tt.policy
			got, err := requestFor(svc, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Families, tt.wantFams) || got.Policy != tt.wantPolicy {
				t.Errorf("families %v policy %s, want %v %s", got.Families, got.Policy, tt.wantFams, tt.wantPolicy)
			}
		})
	}
}

func TestRequestFor_PortsKeepTheirProtocols(t *testing.T) {
	svc := testLBService(nil)
	svc.Spec.Ports = []v1.ServicePort{
		{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53},
		{Name: "dns-udp", Protocol: v1.ProtocolUDP, Port: 53},
		{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 3868},
	}
	got, err := requestFor(svc, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []ipam.Port{{Protocol: "TCP", Port: 53}, {Protocol: "UDP", Port: 53}, {Protocol: "SCTP", Port: 3868}}
	if !reflect.DeepEqual(got.Ports, want) {
		t.Errorf("ports = %v, want %v", got.Ports, want)
	}
}

func TestRequestFor_InternalAnnotationsMakeTheRequestInternal(t *testing.T) {
	tests := []struct {
		name   string
		ann    map[string]string
		honour bool
		want   bool
	}{
		{"no annotation", nil, true, false},
		{"own annotation", map[string]string{v1alpha1.AnnotationInternal: "true"}, false, true},
		{"AWS annotation honoured", map[string]string{testAnnAWS: "true"}, true, true},
		{"AWS annotation not honoured", map[string]string{testAnnAWS: "true"}, false, false},
		{"GKE External", map[string]string{testAnnGKE: "External"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := requestFor(testLBService(tt.ann), nil, tt.honour)
			if err != nil {
				t.Fatal(err)
			}
			if got.Internal != tt.want {
				t.Errorf("Internal = %v, want %v", got.Internal, tt.want)
			}
		})
	}
}

func TestRequestFor_MalformedInternalAnnotationIsRejected(t *testing.T) {
	tests := []struct{ ann, value string }{
		{v1alpha1.AnnotationInternal, "yes"},
		{testAnnAWS, "yes"},
		{testAnnGKE, "Private"},
	}
	for _, tt := range tests {
		t.Run(tt.ann, func(t *testing.T) {
			_, err := requestFor(testLBService(map[string]string{tt.ann: tt.value}), nil, true)
			requireInvalidRequest(t, err, tt.ann, tt.value)
		})
	}
}

func TestRequestFor_PoolAnnotationListsPools(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"public", []string{"public"}},
		{"public,backup", []string{"public", "backup"}},
		{" public , backup ", []string{"public", "backup"}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := requestFor(testLBService(map[string]string{v1alpha1.AnnotationPool: tt.value}), nil, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Pools, tt.want) {
				t.Errorf("pools = %q, want %q", got.Pools, tt.want)
			}
		})
	}
	got, err := requestFor(testLBService(nil), nil, true)
	if err != nil || got.Pools != nil {
		t.Errorf("without annotation: pools %q, err %v; want no pools (any auto-assign pool)", got.Pools, err)
	}
}

func TestRequestFor_PoolAnnotationWithEmptyNameIsRejected(t *testing.T) {
	for _, value := range []string{"", " ", "public,", ",public", "public,,backup", " , "} {
		t.Run(value, func(t *testing.T) {
			_, err := requestFor(testLBService(map[string]string{v1alpha1.AnnotationPool: value}), nil, true)
			requireInvalidRequest(t, err, v1alpha1.AnnotationPool, "empty pool name")
		})
	}
}

func TestRequestFor_IPsAnnotationRequestsAddresses(t *testing.T) {
	tests := []struct {
		value string
		want  []netip.Addr
	}{
		{"172.31.10.5", testAddrs("172.31.10.5")},
		{"fd31::5", testAddrs("fd31::5")},
		{"172.31.10.5,fd31::5", testAddrs("172.31.10.5", "fd31::5")},
		{"fd31::5,172.31.10.5", testAddrs("fd31::5", "172.31.10.5")},
		{" 172.31.10.5 , fd31::5 ", testAddrs("172.31.10.5", "fd31::5")},
		{"FD31:0:0:0::5", testAddrs("fd31::5")},
		{"::ffff:172.31.10.5", testAddrs("172.31.10.5")},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := requestFor(testLBService(map[string]string{v1alpha1.AnnotationIPs: tt.value}), nil, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.IPs, tt.want) {
				t.Errorf("IPs = %v, want %v", got.IPs, tt.want)
			}
		})
	}
}

func TestRequestFor_MalformedIPsAnnotationIsRejected(t *testing.T) {
	tests := []struct{ value, bad string }{
		{"172.31.10.300", "172.31.10.300"},
		{"172.31.10.0/24", "172.31.10.0/24"},
		{"lb.example.com", "lb.example.com"},
		{"172.31.10.5,", `""`},
		{"172.31.10.5;fd31::5", "172.31.10.5;fd31::5"},
		{"172.31.10.5,fd31::zz", "fd31::zz"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"", `""`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			_, err := requestFor(testLBService(map[string]string{v1alpha1.AnnotationIPs: tt.value}), nil, true)
			requireInvalidRequest(t, err, v1alpha1.AnnotationIPs, tt.bad, "not an IP address")
		})
	}
}

func TestRequestFor_LoadBalancerIPAloneIsRequested(t *testing.T) {
	for _, ip := range []string{"172.31.10.7", "fd31::7"} {
		svc := testLBService(nil)
		svc.Spec.LoadBalancerIP = ip
		got, err := requestFor(svc, nil, true)
		if err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		if want := testAddrs(ip); !reflect.DeepEqual(got.IPs, want) {
			t.Errorf("IPs = %v, want %v", got.IPs, want)
		}
	}
}

func TestRequestFor_LoadBalancerIPEqualToAnnotationIsAccepted(t *testing.T) {
	tests := []struct{ ann, lbIP string }{
		{"172.31.10.5", "172.31.10.5"},
		{"172.31.10.5,fd31::5", "fd31::5"},
		{"172.31.10.5,fd31::5", "172.31.10.5"},
		{"fd31::5", "fd31:0::5"},
	}
	for _, tt := range tests {
		t.Run(tt.ann+"/"+tt.lbIP, func(t *testing.T) {
			svc := testLBService(map[string]string{v1alpha1.AnnotationIPs: tt.ann})
			svc.Spec.LoadBalancerIP = tt.lbIP
			got, err := requestFor(svc, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			want := testAddrs(strings.Split(tt.ann, ",")...)
			if !reflect.DeepEqual(got.IPs, want) {
				t.Errorf("IPs = %v, want the annotation's %v", got.IPs, want)
			}
		})
	}
}

func TestRequestFor_LoadBalancerIPDifferentFromAnnotationIsRejected(t *testing.T) {
	svc := testLBService(map[string]string{v1alpha1.AnnotationIPs: "172.31.10.5,fd31::5"})
	svc.Spec.LoadBalancerIP = "172.31.10.6"
	_, err := requestFor(svc, nil, true)
	requireInvalidRequest(t, err, "spec.loadBalancerIP", "172.31.10.6", v1alpha1.AnnotationIPs, "172.31.10.5,fd31::5")
}

func TestRequestFor_MalformedLoadBalancerIPIsRejected(t *testing.T) {
	for _, ip := range []string{"172.31.10.300", "lb.example.com", "fe80::1%eth0", "172.31.10.0/24"} {
		t.Run(ip, func(t *testing.T) {
			svc := testLBService(nil)
			svc.Spec.LoadBalancerIP = ip
			_, err := requestFor(svc, nil, true)
			requireInvalidRequest(t, err, "spec.loadBalancerIP", ip, "not an IP address")
		})
	}
}
