package v1alpha1

// Names shared by ironlb's components and its users' manifests.
const (
	// DefaultLoadBalancerClass is the spec.loadBalancerClass ironlb handles by default.
	DefaultLoadBalancerClass = "ironlb.io/ironlb"

	// AnnotationIPs requests specific addresses, at most one per family: "172.31.10.5,fd31::5".
	AnnotationIPs = "ironlb.io/ips"
	// AnnotationPool restricts a Service to the named pools: "public" or "a,b".
	AnnotationPool = "ironlb.io/pool"
	// AnnotationSharingKey lets Services in one namespace share an address when their
	// (protocol, port) pairs do not overlap.
	AnnotationSharingKey = "ironlb.io/sharing-key"
	// AnnotationAllocatedFrom is written by ironlb-ccm: the pool the Service's addresses came from.
	AnnotationAllocatedFrom = "ironlb.io/allocated-from"
	// AnnotationAllocatedAddresses is written by ironlb-ccm: the addresses the Service holds,
	// "172.31.10.5,fd31::5". Backups and manifests carry it where they do not carry status, so a
	// Service created again from them gets the same addresses back when they are free.
	AnnotationAllocatedAddresses = "ironlb.io/allocated-addresses"
	// AnnotationInternal marks a Service internal: addresses only from Internal pools.
	AnnotationInternal = "service.beta.kubernetes.io/ironlb-load-balancer-internal"

	// ConditionIPAllocated is the Service condition ironlb-ccm owns.
	ConditionIPAllocated = "ironlb.io/IPAllocated"
	// ConditionAnnounced is the Service condition the speakers own.
	ConditionAnnounced = "ironlb.io/Announced"

	// LoadBalancerCleanupFinalizer is the finalizer every LoadBalancer controller uses, so that
	// an address is released before its Service disappears.
	LoadBalancerCleanupFinalizer = "service.kubernetes.io/load-balancer-cleanup"

	// PoolProtectionFinalizer is on an IPPool while the settings of the pool announce the
	// address of some Service (it holds the address, or the address left every pool after it was
	// last in this one). ironlb-ccm adds it before it publishes such an address and removes it
	// when the last such Service is released or moved, so that deleting the pool never stops the
	// speakers from announcing an address a Service keeps.
	PoolProtectionFinalizer = "ironlb.io/pool-protection"

	// FieldManagerCCM is the server-side apply field manager of ironlb-ccm.
	FieldManagerCCM = "ironlb-ccm"
	// FieldManagerSpeaker is the server-side apply field manager of every ironlb-speaker.
	FieldManagerSpeaker = "ironlb-speaker"

	// IPPool condition types.
	PoolConditionReady    = "Ready"
	PoolConditionConflict = "Conflict"
)
