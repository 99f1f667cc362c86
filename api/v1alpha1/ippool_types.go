package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Visibility says which Services a pool serves.
// +kubebuilder:validation:Enum=External;Internal
type Visibility string

const (
	// VisibilityExternal pools serve ordinary LoadBalancer Services.
	VisibilityExternal Visibility = "External"
	// VisibilityInternal pools serve only Services marked internal by annotation.
	VisibilityInternal Visibility = "Internal"
)

// IPPoolSpec is what an operator declares about a pool.
//
// An aggregate must not announce addresses the pool does not hold. CEL can read a CIDR's prefix
// length, so an aggregation length shorter than that of a CIDR entry of its family is rejected
// here; for ranges the speaker refuses such an aggregate (see the Announced condition).
//
// +kubebuilder:validation:XValidation:rule="!has(self.bgp) || !has(self.bgp.aggregationLength) || self.addresses.all(a, a.contains('-') || !isCIDR(a) || cidr(a).ip().family() != 4 || self.bgp.aggregationLength >= cidr(a).prefixLength())",message="bgp.aggregationLength must not be shorter than the prefix length of any IPv4 CIDR in addresses: the aggregate would announce addresses outside the pool",fieldPath=".bgp.aggregationLength"
// +kubebuilder:validation:XValidation:rule="!has(self.bgp) || !has(self.bgp.aggregationLengthV6) || self.addresses.all(a, a.contains('-') || !isCIDR(a) || cidr(a).ip().family() != 6 || self.bgp.aggregationLengthV6 >= cidr(a).prefixLength())",message="bgp.aggregationLengthV6 must not be shorter than the prefix length of any IPv6 CIDR in addresses: the aggregate would announce addresses outside the pool",fieldPath=".bgp.aggregationLengthV6"
type IPPoolSpec struct {
	// Addresses are CIDRs and ranges (a-b, one family) the pool hands out.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Addresses []AddressRange `json:"addresses"`

	// Visibility: External pools serve ordinary Services, Internal pools only internal ones.
	// +kubebuilder:default=External
	// +optional
	Visibility Visibility `json:"visibility,omitempty"`

	// AutoAssign false keeps the pool for Services that name it (ironlb.io/pool) or request one of
	// its addresses.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some clients mishandle.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// ServiceAllocation reserves the pool for matching Services.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`

	// L2 announces the pool's addresses by ARP (IPv4) and NDP (IPv6).
	// +optional
	L2 *L2Advertisement `json:"l2,omitempty"`

	// BGP announces the pool's addresses to BGP peers.
	// +optional
	BGP *BGPAdvertisement `json:"bgp,omitempty"`
}

// ServiceAllocation restricts a pool to matching Services.
type ServiceAllocation struct {
	// Priority orders matching pools: the lowest number is tried first.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority int32 `json:"priority,omitempty"`
	// NamespaceSelector matches the labels of the Service's namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// ServiceSelector matches the Service's labels.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
}

// L2Advertisement announces addresses from one node at a time by ARP and NDP.
type L2Advertisement struct {
	// Interfaces are the interfaces to answer on (those that exist and are up on a node);
	// empty means the interface that holds the node's InternalIP.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
	// NodeSelector limits which nodes may answer.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// Community is a BGP community: standard "65000:100", large "65000:1:2", or a well-known name.
//
// +kubebuilder:validation:MaxLength=40
// +kubebuilder:validation:XValidation:rule="self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole', 'graceful-shutdown'] || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(n, int(n) <= 65535)) || (self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').all(n, int(n) <= 4294967295))",message="must be a standard community such as 65000:100 (two numbers up to 65535), a large community such as 65000:1:2 (three numbers up to 4294967295), or a well-known name such as no-export"
type Community string

// BGPAdvertisement announces addresses to BGP peers from every eligible node.
type BGPAdvertisement struct {
	// PeerSelector picks the BGPPeers to announce to; empty means all.
	// +optional
	PeerSelector *metav1.LabelSelector `json:"peerSelector,omitempty"`
	// NodeSelector limits which nodes announce.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// Communities are attached to every route.
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	Communities []Community `json:"communities,omitempty"`
	// LocalPref is attached to routes sent to iBGP peers.
	// +optional
	LocalPref *uint32 `json:"localPref,omitempty"`
	// AggregationLength is the IPv4 prefix length announced (32: one route per address). An
	// aggregate must hold only addresses of the pool: a length shorter than a CIDR entry's is
	// rejected, and an aggregate that covers addresses outside the pool's ranges is not announced.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`
	// AggregationLengthV6 is the IPv6 prefix length announced (128: one route per address), under
	// the same rule as AggregationLength.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:default=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
}

// FamilyCount counts a pool's addresses of one family. Numbers are decimal strings because an
// IPv6 pool can hold 2^64 addresses and more.
type FamilyCount struct {
	Capacity  string `json:"capacity"`
	Allocated string `json:"allocated"`
	Available string `json:"available"`
}

// IPPoolStatus is what ironlb-ccm reports about a pool.
type IPPoolStatus struct {
	// Conditions: Ready (the pool hands out addresses) and Conflict (it overlaps an older pool).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// IPv4 counts, when the pool has IPv4 addresses.
	// +optional
	IPv4 *FamilyCount `json:"ipv4,omitempty"`
	// IPv6 counts, when the pool has IPv6 addresses.
	// +optional
	IPv6 *FamilyCount `json:"ipv6,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// IPPool is a set of addresses that ironlb hands out to LoadBalancer Services.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="IPv4 Allocated",type=string,JSONPath=`.status.ipv4.allocated`
// +kubebuilder:printcolumn:name="IPv4 Capacity",type=string,JSONPath=`.status.ipv4.capacity`
// +kubebuilder:printcolumn:name="IPv6 Allocated",type=string,JSONPath=`.status.ipv6.allocated`
// +kubebuilder:printcolumn:name="IPv6 Capacity",type=string,JSONPath=`.status.ipv6.capacity`
// +kubebuilder:printcolumn:name="Visibility",type=string,JSONPath=`.spec.visibility`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPPoolSpec `json:"spec"`
	// +optional
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
