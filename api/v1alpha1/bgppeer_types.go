package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeerSpec describes a BGP router the speakers peer with.
//
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime"
type BGPPeerSpec struct {
	// Address of the peer.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	Address string `json:"address"`
	// ASN of the peer.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967294
	ASN int64 `json:"asn"`
	// LocalASN the speakers use towards this peer.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967294
	LocalASN int64 `json:"localASN"`
	// Port of the peer.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=179
	// +optional
	Port int32 `json:"port,omitempty"`
	// HoldTime of the session; 0 disables keepalives, otherwise at least 3s.
	// +kubebuilder:default="9s"
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || duration(self) >= duration('3s')",message="holdTime must be 0 or at least 3s"
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// KeepaliveTime between keepalive messages.
	// +kubebuilder:default="3s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="keepaliveTime must not be negative"
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// ConnectTime is the retry interval for connecting to the peer.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="connectTime must be at least 1s"
	// +optional
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`
	// PasswordSecretRef names a Secret whose "password" key holds the TCP MD5 password. With no
	// namespace, the speaker's own (ironlb-system). The RBAC in deploy/ lets the speaker read
	// Secrets by name in ironlb-system only, so keep password Secrets there.
	// +optional
	PasswordSecretRef *corev1.SecretReference `json:"passwordSecretRef,omitempty"`
	// EBGPMultihop allows an eBGP peer more than one hop away.
	// +optional
	EBGPMultihop bool `json:"ebgpMultihop,omitempty"`
	// SourceAddress the session is opened from.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`
	// NodeSelector limits which nodes peer; empty means all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// GracefulRestart keeps routes at the peer while a speaker restarts.
	// +optional
	GracefulRestart bool `json:"gracefulRestart,omitempty"`
	// BFD runs a BFD session with the peer beside BGP (RFC 5880; single hop per RFC 5881, or
	// multihop per RFC 5883 with ebgpMultihop): when BFD finds the path down, the speaker resets
	// the BGP session at once instead of waiting for the hold time, and the router does the same
	// when the node dies. The router must run BFD towards the nodes too; until it does, BGP works
	// alone and status.nodes[].bfd says why BFD is not up. `bfd: {}` takes the defaults.
	// +optional
	BFD *BFDSettings `json:"bfd,omitempty"`
}

// BFDSettings are a BFD session's timers: with the defaults, a dead path is found in 900 ms.
type BFDSettings struct {
	// MinReceive is the shortest interval between BFD packets this node asks the peer for.
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="minReceive must be between 10ms and 60s"
	// +optional
	MinReceive *metav1.Duration `json:"minReceive,omitempty"`
	// MinTransmit is the shortest interval at which this node sends BFD packets.
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="minTransmit must be between 10ms and 60s"
	// +optional
	MinTransmit *metav1.Duration `json:"minTransmit,omitempty"`
	// Multiplier is how many packets may be missed before the session is down.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +optional
	Multiplier *int32 `json:"multiplier,omitempty"`
}

// BGPPeerNodeStatus is one speaker's view of its session.
type BGPPeerNodeStatus struct {
	// Node the speaker runs on.
	Node string `json:"node"`
	// State of the session (Idle, Connect, Active, OpenSent, OpenConfirm, Established).
	State string `json:"state"`
	// Since when the session has been in State.
	// +optional
	Since metav1.Time `json:"since,omitempty"`
	// PrefixesAdvertised to the peer.
	// +optional
	PrefixesAdvertised int32 `json:"prefixesAdvertised,omitempty"`
	// PrefixesReceived from the peer.
	// +optional
	PrefixesReceived int32 `json:"prefixesReceived,omitempty"`
	// Message says why the session is not established, as the router or the connection said it
	// (e.g. the NOTIFICATION the router sent: bad peer AS, authentication failure).
	// +optional
	Message string `json:"message,omitempty"`
	// BFD is the state of this node's BFD session with the peer; absent when the BGPPeer has
	// no bfd section.
	// +optional
	BFD *BFDStatus `json:"bfd,omitempty"`
}

// BFDStatus is one node's BFD session with a peer.
type BFDStatus struct {
	// State of the session (AdminDown, Down, Init, Up).
	State string `json:"state"`
	// Since when the session has been in State.
	// +optional
	Since metav1.Time `json:"since,omitempty"`
	// Message says why the session is not up (e.g. no BFD packet from the peer: the router
	// may not run BFD for this node) or why it last went down.
	// +optional
	Message string `json:"message,omitempty"`
}

// BGPPeerStatus collects the speakers' session states; each speaker owns its own entry.
type BGPPeerStatus struct {
	// +listType=map
	// +listMapKey=node
	// +optional
	Nodes []BGPPeerNodeStatus `json:"nodes,omitempty"`
}

// BGPPeer is a router that ironlb's speakers announce addresses to.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.asn`
// +kubebuilder:printcolumn:name="Local ASN",type=integer,JSONPath=`.spec.localASN`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
