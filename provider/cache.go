package provider

import (
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// trimService is the Service informer's transform (see above). Objects that are not Services,
// such as the tombstones of deletions, pass through unchanged.
func trimService(obj any) (any, error) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return obj, nil
	}
	return trimmedService(svc), nil
}

// trimmedService is the part of svc that ironlb-ccm reads, in a new object. It shares parts of
// svc, and may put equal shared values in them (see shared).
func trimmedService(svc *v1.Service) *v1.Service {
	out := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:              svc.Name,
			Namespace:         svc.Namespace,
			UID:               svc.UID,             // Events' involvedObject
			ResourceVersion:   svc.ResourceVersion, // the mutation cache keeps the newer copy
			Generation:        svc.Generation,      // the condition's observedGeneration
			CreationTimestamp: svc.CreationTimestamp,
			DeletionTimestamp: svc.DeletionTimestamp,
			Labels:            svc.Labels, // IPPool serviceSelector
			Annotations:       readAnnotations(svc.Annotations),
			Finalizers:        shared(svc.Finalizers, onlyCleanupFinalizer),
			ManagedFields:     ingressWriters(svc.ManagedFields),
		},
		Spec: v1.ServiceSpec{
			Type:              svc.Spec.Type,
			LoadBalancerClass: svc.Spec.LoadBalancerClass,
			LoadBalancerIP:    svc.Spec.LoadBalancerIP,
			IPFamilies:        sharedFamilies(svc.Spec.IPFamilies),
			IPFamilyPolicy:    sharedPolicy(svc.Spec.IPFamilyPolicy),
		},
		Status: v1.ServiceStatus{LoadBalancer: svc.Status.LoadBalancer},
	}
	if len(svc.Spec.Ports) > 0 {
		// Sharing an address and the ingress's ports need only the protocol and the port.
		out.Spec.Ports = make([]v1.ServicePort, len(svc.Spec.Ports))
		for i, p := range svc.Spec.Ports {
			out.Spec.Ports[i] = v1.ServicePort{Protocol: sharedProtocol(p.Protocol), Port: p.Port}
		}
	}
	for i := range out.Status.LoadBalancer.Ingress {
		ing := &out.Status.LoadBalancer.Ingress[i]
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
		out.Status.Conditions = []metav1.Condition{cond}
	}
	return out
}

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

// readAnnotations keeps the annotations ironlb-ccm reads: ironlb's own (requests and what it
// wrote) and the internal load balancer annotations of ironlb and of other clouds (see
// isInternal).
func readAnnotations(ann map[string]string) map[string]string {
	var out map[string]string
	for k, v := range ann {
		if !readAnnotation(k) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
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
	_ cache.TransformFunc = trimService
	_ cache.TransformFunc = trimNamespace
)
