package provider

import (
	"context"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cloudproviderapi "k8s.io/cloud-provider/api"
)

func testNode(name string, addresses ...v1.NodeAddress) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status:     v1.NodeStatus{Addresses: addresses},
	}
}

func testInternalIP(a string) v1.NodeAddress {
	return v1.NodeAddress{Type: v1.NodeInternalIP, Address: a}
}
func testExternalIP(a string) v1.NodeAddress {
	return v1.NodeAddress{Type: v1.NodeExternalIP, Address: a}
}
func testHostname(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeHostName, Address: a} }

func TestInstanceMetadata_ProviderIDIsIronlbNodeNameUnlessSet(t *testing.T) {
	tests := []struct {
		name, providerID, want string
	}{
		{"empty", "", "ironlb://worker-1"},
		{"already ironlb", "ironlb://worker-1", "ironlb://worker-1"},
		{"set by someone else", "metal://rack4/worker-1", "metal://rack4/worker-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNode("worker-1")
			n.Spec.ProviderID = tt.providerID
			md, err := instances{}.InstanceMetadata(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			if md.ProviderID != tt.want {
				t.Errorf("ProviderID = %q, want %q", md.ProviderID, tt.want)
			}
		})
	}
}

func TestInstanceMetadata_Addresses(t *testing.T) {
	tests := []struct {
		name       string
		addrs      []v1.NodeAddress
		providedIP *string
		want       []v1.NodeAddress
	}{
		{
			name:  "node's addresses are copied and kept in order",
			addrs: []v1.NodeAddress{testInternalIP("10.0.0.5"), testExternalIP("203.0.113.5"), testHostname("worker-1.lab")},
			want:  []v1.NodeAddress{testInternalIP("10.0.0.5"), testExternalIP("203.0.113.5"), testHostname("worker-1.lab")},
		},
		{
			name:  "hostname is added when the node has none",
			addrs: []v1.NodeAddress{testInternalIP("10.0.0.5")},
			want:  []v1.NodeAddress{testInternalIP("10.0.0.5"), testHostname("worker-1")},
		},
		{
			name: "node without addresses gets its hostname",
			want: []v1.NodeAddress{testHostname("worker-1")},
		},
		{
			name:       "provided node IP is added as InternalIP when missing",
			addrs:      []v1.NodeAddress{testHostname("worker-1")},
			providedIP: testStrPtr("10.0.0.5"),
			want:       []v1.NodeAddress{testHostname("worker-1"), testInternalIP("10.0.0.5")},
		},
		{
			name:       "provided node IP already an InternalIP is not duplicated",
			addrs:      []v1.NodeAddress{testInternalIP("10.0.0.5"), testHostname("worker-1")},
			providedIP: testStrPtr("10.0.0.5"),
			want:       []v1.NodeAddress{testInternalIP("10.0.0.5"), testHostname("worker-1")},
		},
		{
			name:       "provided node IP already an ExternalIP is not added again",
			addrs:      []v1.NodeAddress{testExternalIP("203.0.113.5")},
			providedIP: testStrPtr("203.0.113.5"),
			want:       []v1.NodeAddress{testExternalIP("203.0.113.5"), testHostname("worker-1")},
		},
		{
			name:       "dual-stack provided node IPs are both added",
			addrs:      []v1.NodeAddress{testInternalIP("10.0.0.5")},
			providedIP: testStrPtr("10.0.0.5,fd00::5"),
			want:       []v1.NodeAddress{testInternalIP("10.0.0.5"), testInternalIP("fd00::5"), testHostname("worker-1")},
		},
		{
			name:       "provided IPv6 node IP is written in canonical form",
			providedIP: testStrPtr("FD00:0:0::5"),
			want:       []v1.NodeAddress{testInternalIP("fd00::5"), testHostname("worker-1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNode("worker-1", tt.addrs...)
			if tt.providedIP != nil {
				n.Annotations = map[string]string{cloudproviderapi.AnnotationAlphaProvidedIPAddr: *tt.providedIP}
			}
			before := append([]v1.NodeAddress(nil), n.Status.Addresses...)
			md, err := instances{}.InstanceMetadata(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(md.NodeAddresses, tt.want) {
				t.Errorf("NodeAddresses = %v, want %v", md.NodeAddresses, tt.want)
			}
			if !reflect.DeepEqual(n.Status.Addresses, before) {
				t.Errorf("the Node's own addresses changed to %v", n.Status.Addresses)
			}
		})
	}
}

func TestInstanceMetadata_TopologyAndInstanceTypeFromWellKnownLabels(t *testing.T) {
	n := testNode("worker-1")
	n.Labels = map[string]string{
		v1.LabelTopologyZone:       "rack-4",
		v1.LabelTopologyRegion:     "dc-west",
		v1.LabelInstanceTypeStable: "r650",
	}
	md, err := instances{}.InstanceMetadata(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if md.Zone != "rack-4" || md.Region != "dc-west" || md.InstanceType != "r650" {
		t.Errorf("zone %q region %q type %q, want rack-4 dc-west r650", md.Zone, md.Region, md.InstanceType)
	}
}

func TestInstanceMetadata_UnlabelledNodeIsBareMetalWithoutTopology(t *testing.T) {
	md, err := instances{}.InstanceMetadata(context.Background(), testNode("worker-1"))
	if err != nil {
		t.Fatal(err)
	}
	if md.InstanceType != "bare-metal" || md.Zone != "" || md.Region != "" {
		t.Errorf("type %q zone %q region %q, want bare-metal and no topology", md.InstanceType, md.Zone, md.Region)
	}
}

func TestInstanceExists_IsAlwaysTrue(t *testing.T) {
	for _, n := range []*v1.Node{testNode("worker-1"), {ObjectMeta: metav1.ObjectMeta{Name: "gone"}, Spec: v1.NodeSpec{ProviderID: "ironlb://gone"}}} {
		ok, err := instances{}.InstanceExists(context.Background(), n)
		if err != nil || !ok {
			t.Errorf("InstanceExists(%s) = (%v, %v), want (true, nil)", n.Name, ok, err)
		}
	}
}

func TestInstanceShutdown_IsAlwaysFalse(t *testing.T) {
	n := testNode("worker-1")
	n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionUnknown}}
	down, err := instances{}.InstanceShutdown(context.Background(), n)
	if err != nil || down {
		t.Errorf("InstanceShutdown = (%v, %v), want (false, nil)", down, err)
	}
}

func TestCloud_OffersInstancesV2ButNotLegacyInterfaces(t *testing.T) {
	c := New(Options{LoadBalancerClass: "ironlb.io/ironlb", HandleClassless: true})
	if _, ok := c.InstancesV2(); !ok {
		t.Error("InstancesV2 not offered: nodes of external-cloud kubelets would stay uninitialized")
	}
	if _, ok := c.Instances(); ok {
		t.Error("legacy Instances offered")
	}
	if _, ok := c.Zones(); ok {
		t.Error("legacy Zones offered")
	}
	if _, ok := c.Routes(); ok {
		t.Error("Routes offered")
	}
	if c.ProviderName() != "ironlb" {
		t.Errorf("ProviderName = %q, want ironlb", c.ProviderName())
	}
}
