package provider

import (
	"context"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"
)

// instances reports what a Node already says about itself. On bare metal there is no cloud API
// to ask, but kubelets started with --cloud-provider=external keep their nodes tainted
// node.cloudprovider.kubernetes.io/uninitialized until a cloud provider answers for them.
type instances struct{}

var _ cloudprovider.InstancesV2 = instances{}

// InstanceExists is true for every Node: a machine that is gone is the operator's to remove;
// ironlb cannot tell a powered-off server from a deleted one.
func (instances) InstanceExists(context.Context, *v1.Node) (bool, error) { return true, nil }

// InstanceShutdown is false: there is no power state to read.
func (instances) InstanceShutdown(context.Context, *v1.Node) (bool, error) { return false, nil }

// InstanceMetadata returns the Node's own addresses and labels, and a provider ID of the form
// ironlb://<node name> unless the node already has one.
func (instances) InstanceMetadata(_ context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	md := &cloudprovider.InstanceMetadata{
		ProviderID:    node.Spec.ProviderID,
		InstanceType:  node.Labels[v1.LabelInstanceTypeStable],
		Zone:          node.Labels[v1.LabelTopologyZone],
		Region:        node.Labels[v1.LabelTopologyRegion],
		NodeAddresses: append([]v1.NodeAddress(nil), node.Status.Addresses...),
	}
	if md.ProviderID == "" {
		md.ProviderID = ProviderName + "://" + node.Name
	}
	if md.InstanceType == "" {
		md.InstanceType = "bare-metal"
	}
	// A kubelet with --node-ip records it in this annotation, and the node controller refuses
	// to initialize a node whose addresses do not include it.
	if ip, ok := node.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr]; ok {
		for _, s := range strings.Split(ip, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && !hasAddress(md.NodeAddresses, a.String()) {
				md.NodeAddresses = append(md.NodeAddresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: a.String()})
			}
		}
	}
	if !hasType(md.NodeAddresses, v1.NodeHostName) {
		md.NodeAddresses = append(md.NodeAddresses, v1.NodeAddress{Type: v1.NodeHostName, Address: node.Name})
	}
	return md, nil
}

func hasAddress(addrs []v1.NodeAddress, a string) bool {
	for _, x := range addrs {
		if x.Address == a {
			return true
		}
	}
	return false
}

func hasType(addrs []v1.NodeAddress, t v1.NodeAddressType) bool {
	for _, x := range addrs {
		if x.Type == t {
			return true
		}
	}
	return false
}
