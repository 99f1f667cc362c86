package v1alpha1

// The REST resources of ironlb's kinds, for dynamic clients and informers.
var (
	IPPoolResource  = SchemeGroupVersion.WithResource("ippools")
	BGPPeerResource = SchemeGroupVersion.WithResource("bgppeers")
)
