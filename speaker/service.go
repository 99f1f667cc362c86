package speaker

import (
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/lbclass"
	"github.com/ironlb/ironlb/internal/svcstatus"
)

// lbService is what a speaker keeps of a Service: what the plans and the
// condition writer read, and nothing else, so that a field they do not read
// cannot cost memory and a field they read cannot be dropped by mistake
// (it would not compile). The informer turns every Service into one as it
// arrives (slimService); with thousands of Services a v1.Service, even cut
// down, costs several times as much.
type lbService struct {
	// The Service's identity, as the cache keys it (GetObjectMeta).
	Namespace, Name string
	UID             types.UID
	ResourceVersion string
	Generation      int64

	// ours: ironlb handles it (lbclass): type LoadBalancer and ironlb's
	// class. Nothing below is kept of one that is not.
	ours bool
	// local: externalTrafficPolicy Local, so only nodes with an endpoint
	// may answer or announce it.
	local bool
	// allocatedFrom is the pool its addresses came from
	// (v1alpha1.AnnotationAllocatedFrom).
	allocatedFrom string
	// record is ironlb-ccm's record of its addresses
	// (AnnotationAllocatedAddresses), parsed once here, and recorded
	// whether the Service carries one at all (it may name no address): an
	// address that left every pool is answered only if the record names it
	// (poolOf), and with a record, only the addresses it names
	// (notIronlbs).
	record   []netip.Addr
	recorded bool
	// addrs are its addresses in status.loadBalancer (svcstatus.Addrs).
	addrs []netip.Addr
	// announced is its Announced condition, nil if it has none.
	announced *metav1.Condition
}

// GetObjectMeta lets the informer's cache key an lbService like any object.
func (s *lbService) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion}
}

func (s *lbService) key() types.NamespacedName {
	return types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
}

// newLBService is what the speaker keeps of svc, which c says whether
// ironlb handles.
func newLBService(c lbclass.Classifier, svc *v1.Service) *lbService {
	out := &lbService{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID, ResourceVersion: svc.ResourceVersion}
	if !c.Handles(svc) {
		return out
	}
	out.ours = true
	out.Generation = svc.Generation
	out.local = svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
	out.allocatedFrom = svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	if v, ok := svc.Annotations[v1alpha1.AnnotationAllocatedAddresses]; ok {
		out.recorded = true
		for _, s := range strings.Split(v, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
				out.record = append(out.record, a.Unmap())
			}
		}
	}
	if addrs := svcstatus.Addrs(svc); len(addrs) > 0 {
		out.addrs = addrs[:len(addrs):len(addrs)]
	}
	if c := svcstatus.Condition(svc, v1alpha1.ConditionAnnounced); c != nil {
		announced := *c
		out.announced = &announced
	}
	return out
}

// slimService turns every Service the informer receives into an lbService
// before it reaches the cache.
func slimService(c lbclass.Classifier) cache.TransformFunc {
	return func(obj any) (any, error) {
		if svc, ok := obj.(*v1.Service); ok {
			return newLBService(c, svc), nil
		}
		return obj, nil
	}
}
