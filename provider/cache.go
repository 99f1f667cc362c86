package provider

import (
	"maps"
	"slices"
	"strings"
	"unique"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// ironlb-ccm caches every Service of the cluster, LoadBalancer or not, and most of a Service is
// what ironlb never reads: managedFields (often half of the object), ClusterIPs, node ports,
// selectors, other controllers' annotations and conditions. trimService is the transform of the
// Service informer: the cache keeps only what the service controller reads, so memory grows with
// the number of Services by what ironlb needs of each, not by what users and other controllers
// put on them. Every field read by the controller, the load balancer, the allocator's request,
// the conflict detection, the record and the waiting line must be kept here, or it reads as
// empty; the table tests of cache_test.go list them.
//
// The informer is not restricted to type LoadBalancer by a field selector, although ironlb
// handles no other type: with one, a Service changed from LoadBalancer to ClusterIP would leave
// the cache as if deleted, and ironlb would neither release its address nor take its finalizer
// off.

// trimService is the Service informer's transform (see above): it turns a Service into a
// *cachedService. Objects that are not Services, such as the tombstones of deletions, pass
// through unchanged.
func trimService(obj any) (any, error) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return obj, nil
	}
	return newCachedService(svc), nil
}

// cachedService is what ironlb-ccm keeps of a Service: the fields it reads, in a type of its own
// rather than a v1.Service with the rest left empty, which would keep the room for every field
// (several hundred bytes) and a map for a few annotations. The controller reads a Service as a
// v1.Service (service), built for one sync and then dropped. It is a runtime.Object with an
// object meta, for the informer's keys and indexes and for the mutation cache's resource versions.
// Cached objects are never written to.
type cachedService struct {
	name, namespace string
	uid             types.UID // Events' involvedObject
	resourceVersion string    // the mutation cache keeps the newer copy
	generation      int64     // the condition's observedGeneration
	created         metav1.Time
	deleting        *metav1.Time
	labels          map[string]string // IPPool serviceSelector
	annotations     []annotation      // only those ironlb reads (readAnnotation), by key
	finalizers      []string
	ingressWriters  []metav1.ManagedFieldsEntry // see ingressWriters

	typ            v1.ServiceType
	class          *string
	loadBalancerIP string
	families       []v1.IPFamily
	policy         *v1.IPFamilyPolicy
	ports          []portKey // sharing an address and the ingress's ports need only these

	ingress   []v1.LoadBalancerIngress
	condition *metav1.Condition // ironlb's own (IPAllocated)
}

type annotation struct{ key, value string }

type portKey struct {
	protocol v1.Protocol
	port     int32
}

// newCachedService is the part of svc that ironlb-ccm reads. It shares parts of svc, and may
// put equal shared values in them (see shared).
func newCachedService(svc *v1.Service) *cachedService {
	out := &cachedService{
		name:            svc.Name,
		namespace:       intern(svc.Namespace),
		uid:             svc.UID,
		resourceVersion: svc.ResourceVersion,
		generation:      svc.Generation,
		created:         svc.CreationTimestamp,
		deleting:        svc.DeletionTimestamp,
		labels:          svc.Labels,
		annotations:     readAnnotations(svc.Annotations),
		finalizers:      shared(svc.Finalizers, onlyCleanupFinalizer),
		ingressWriters:  ingressWriters(svc.ManagedFields),
		typ:             svc.Spec.Type,
		class:           svc.Spec.LoadBalancerClass,
		loadBalancerIP:  svc.Spec.LoadBalancerIP,
		families:        sharedFamilies(svc.Spec.IPFamilies),
		policy:          sharedPolicy(svc.Spec.IPFamilyPolicy),
		ingress:         svc.Status.LoadBalancer.Ingress,
	}
	if len(svc.Spec.Ports) > 0 {
		out.ports = make([]portKey, len(svc.Spec.Ports))
		for i, p := range svc.Spec.Ports {
			out.ports[i] = portKey{protocol: sharedProtocol(p.Protocol), port: p.Port}
		}
	}
	for i := range out.ingress {
		ing := &out.ingress[i]
		if ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeVIP {
			ing.IPMode = &vipMode
		}
		for j := range ing.Ports {
			ing.Ports[j].Protocol = sharedProtocol(ing.Ports[j].Protocol)
		}
	}
	if c := ownCondition(svc); c != nil {
		cond := *c
		cond.Type = v1alpha1.ConditionIPAllocated
		cond.Status = metav1.ConditionStatus(intern(string(cond.Status)))
		cond.Reason = intern(cond.Reason)
		out.condition = &cond
	}
	return out
}

// service is s as the v1.Service the controller reads, with every field ironlb-ccm does not read
// left empty. It is new, but shares its lists and maps with s: it must not be written to.
func (s *cachedService) service() *v1.Service {
	out := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:              s.name,
			Namespace:         s.namespace,
			UID:               s.uid,
			ResourceVersion:   s.resourceVersion,
			Generation:        s.generation,
			CreationTimestamp: s.created,
			DeletionTimestamp: s.deleting,
			Labels:            s.labels,
			Finalizers:        s.finalizers,
			ManagedFields:     s.ingressWriters,
		},
		Spec: v1.ServiceSpec{
			Type:              s.typ,
			LoadBalancerClass: s.class,
			LoadBalancerIP:    s.loadBalancerIP,
			IPFamilies:        s.families,
			IPFamilyPolicy:    s.policy,
		},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: s.ingress}},
	}
	if len(s.annotations) > 0 {
		out.Annotations = make(map[string]string, len(s.annotations))
		for _, a := range s.annotations {
			out.Annotations[a.key] = a.value
		}
	}
	if len(s.ports) > 0 {
		out.Spec.Ports = make([]v1.ServicePort, len(s.ports))
		for i, p := range s.ports {
			out.Spec.Ports[i] = v1.ServicePort{Protocol: p.protocol, Port: p.port}
		}
	}
	if s.condition != nil {
		out.Status.Conditions = []metav1.Condition{*s.condition}
	}
	return out
}

// trimmedService is what the controller reads of svc: svc through the cache.
func trimmedService(svc *v1.Service) *v1.Service {
	return newCachedService(svc).service()
}

// changed reports whether cur differs from s in anything that can change what ironlb does: not
// in its resource version, generation or other controllers' write times alone, such as the
// status writes of other components.
func (s *cachedService) changed(cur *cachedService) bool {
	return s.typ != cur.typ || s.loadBalancerIP != cur.loadBalancerIP ||
		!equalPtr(s.class, cur.class) || !equalPtr(s.policy, cur.policy) ||
		!slices.Equal(s.families, cur.families) || !slices.Equal(s.ports, cur.ports) ||
		!slices.Equal(s.annotations, cur.annotations) || !maps.Equal(s.labels, cur.labels) ||
		!slices.Equal(s.finalizers, cur.finalizers) ||
		!equality.Semantic.DeepEqual(s.deleting, cur.deleting) ||
		!equality.Semantic.DeepEqual(s.ingress, cur.ingress) ||
		!equality.Semantic.DeepEqual(s.condition, cur.condition)
}

func equalPtr[T comparable](a, b *T) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

// GetObjectMeta gives the informer's key and namespace index and the mutation cache what they
// read: name, namespace, UID and resource version.
func (s *cachedService) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: s.name, Namespace: s.namespace, UID: s.uid, ResourceVersion: s.resourceVersion}
}

func (s *cachedService) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject returns s itself: cached objects are never written to.
func (s *cachedService) DeepCopyObject() runtime.Object { return s }

// Values that nearly every cached Service holds are shared instead of held once per Service, a
// few hundred bytes per Service that add up at tens of thousands. Cached objects are never
// written to, so sharing them is safe.
var (
	onlyCleanupFinalizer = []string{v1alpha1.LoadBalancerCleanupFinalizer}
	familyLists          = [][]v1.IPFamily{{v1.IPv4Protocol}, {v1.IPv6Protocol}, {v1.IPv4Protocol, v1.IPv6Protocol}, {v1.IPv6Protocol, v1.IPv4Protocol}}
	policies             = []v1.IPFamilyPolicy{v1.IPFamilyPolicySingleStack, v1.IPFamilyPolicyPreferDualStack, v1.IPFamilyPolicyRequireDualStack}
	protocols            = []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP}
	vipMode              = v1.LoadBalancerIPModeVIP
)

// intern returns the one copy of s that every cached object shares: for strings that many
// Services hold alike, such as namespaces, annotation keys, pool names and condition reasons.
// A copy no object holds any more is dropped by the garbage collector.
func intern(s string) string {
	return unique.Make(s).Value()
}

// shared returns common if list equals it, else list.
func shared[T comparable](list, common []T) []T {
	if slices.Equal(list, common) {
		return common
	}
	return list
}

func sharedFamilies(fs []v1.IPFamily) []v1.IPFamily {
	for _, common := range familyLists {
		if slices.Equal(fs, common) {
			return common
		}
	}
	return fs
}

func sharedPolicy(p *v1.IPFamilyPolicy) *v1.IPFamilyPolicy {
	if p == nil {
		return nil
	}
	for i := range policies {
		if *p == policies[i] {
			return &policies[i]
		}
	}
	return p
}

func sharedProtocol(p v1.Protocol) v1.Protocol {
	for _, common := range protocols {
		if p == common {
			return common
		}
	}
	return p
}

// readAnnotations keeps the annotations ironlb-ccm reads, sorted by key: ironlb's own (requests
// and what it wrote) and the internal load balancer annotations of ironlb and of other clouds
// (see isInternal).
func readAnnotations(ann map[string]string) []annotation {
	var out []annotation
	for k, v := range ann {
		if !readAnnotation(k) {
			continue
		}
		if k == v1alpha1.AnnotationAllocatedFrom {
			v = intern(v) // a pool's name, the same on many Services
		}
		out = append(out, annotation{intern(k), v})
	}
	slices.SortFunc(out, func(a, b annotation) int { return strings.Compare(a.key, b.key) })
	return slices.Clip(out)
}

func readAnnotation(key string) bool {
	if strings.HasPrefix(key, "ironlb.io/") || key == v1alpha1.AnnotationInternal {
		return true
	}
	for _, c := range cloudInternalAnnotations {
		if key == c.annotation {
			return true
		}
	}
	return false
}

// ownsIngressFields is what ingressWriters keeps of the fields a managedFields entry owns.
var ownsIngressFields = []byte(`{"f:status":{"f:loadBalancer":{"f:ingress":{}}}}`)

// ingressWriters keeps, of a Service's managedFields, what conflictingWriter reads: the entries
// of other field managers that own status.loadBalancer.ingress, with the time they last wrote,
// cut down to that one field. Every other entry (users' manifests, the API server's, ironlb's
// own) is dropped.
func ingressWriters(fields []metav1.ManagedFieldsEntry) []metav1.ManagedFieldsEntry {
	var out []metav1.ManagedFieldsEntry
	for _, f := range fields {
		if f.Manager == v1alpha1.FieldManagerCCM || !ownsIngress(f.FieldsV1) {
			continue
		}
		out = append(out, metav1.ManagedFieldsEntry{
			Manager:     f.Manager,
			Operation:   f.Operation,
			Time:        f.Time,
			Subresource: f.Subresource,
			FieldsType:  f.FieldsType,
			FieldsV1:    &metav1.FieldsV1{Raw: ownsIngressFields},
		})
	}
	return out
}

// trimNamespace is the Namespace informer's transform: ironlb-ccm reads only a namespace's
// labels (IPPool namespaceSelector).
func trimNamespace(obj any) (any, error) {
	ns, ok := obj.(*v1.Namespace)
	if !ok {
		return obj, nil
	}
	return &v1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:            ns.Name,
		UID:             ns.UID,
		ResourceVersion: ns.ResourceVersion,
		Labels:          ns.Labels,
	}}, nil
}

var (
	_ cache.TransformFunc       = trimService
	_ cache.TransformFunc       = trimNamespace
	_ runtime.Object            = &cachedService{}
	_ metav1.ObjectMetaAccessor = &cachedService{}
)
