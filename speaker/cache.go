package speaker

import (
	"cmp"
	"maps"
	"slices"
	"sync"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// What a speaker keeps of the cluster. Its cost must follow what it
// announces, not the size of the cluster: the API server sends it only
// LoadBalancer Services (serviceSelector), it keeps the EndpointSlices of
// ironlb's Local Services only (localEndpoints), and every object is cut
// down on arrival, before it reaches the caches, to the fields the plans,
// the membership and the condition writer read: a Service to an lbService
// (service.go), the others to the same type with fewer fields set. A field
// of those read anywhere in this package must be kept here, or it reads as
// empty.

// serviceSelector asks the API server for LoadBalancer Services only
// (Kubernetes 1.31 and later): the speaker never reads any other.
var serviceSelector = fields.OneTermEqualSelector("spec.type", string(v1.ServiceTypeLoadBalancer)).String()

// slimMeta is the identity of an object, what a cache needs to key it.
func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
}

// sliceSlimmer cuts an EndpointSlice down to the nodes where it has a ready
// or a serving endpoint, one endpoint per node (localEndpointNodes reads no
// more). Node names are shared among all slices.
type sliceSlimmer struct {
	mu    sync.Mutex
	names map[string]*string
}

// endpointReady is the one Ready condition all kept endpoints share.
var endpointReady = new(true)

func newSliceSlimmer() *sliceSlimmer { return &sliceSlimmer{names: map[string]*string{}} }

func (s *sliceSlimmer) transform(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: slimMeta(es.ObjectMeta), AddressType: es.AddressType}
	if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	nodes := localEndpointNodes([]*discoveryv1.EndpointSlice{es})
	if len(nodes) == 0 {
		return out, nil
	}
	out.Endpoints = make([]discoveryv1.Endpoint, 0, len(nodes))
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range nodes {
		name := s.names[n]
		if name == nil {
			name = &n
			s.names[n] = name
		}
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{NodeName: name, Conditions: discoveryv1.EndpointConditions{Ready: endpointReady}})
	}
	slices.SortFunc(out.Endpoints, func(a, b discoveryv1.Endpoint) int {
		return cmp.Compare(*a.NodeName, *b.NodeName)
	})
	return out, nil
}

// slimNode keeps of a Node its labels (pool and peer selectors, exclusion),
// addresses (heartbeats) and the type and status of its conditions
// (NetworkUnavailable): not its images, timestamps or managedFields, which
// make up most of it and change on every status report.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil
	}
	out := &v1.Node{ObjectMeta: slimMeta(n.ObjectMeta)}
	out.Labels = n.Labels
	out.Status.Addresses = n.Status.Addresses
	for _, c := range n.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, v1.NodeCondition{Type: c.Type, Status: c.Status})
	}
	return out, nil
}

// slimUnstructured drops the managedFields of an IPPool or a BGPPeer.
func slimUnstructured(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
	}
	return obj, nil
}

// serviceMatters reports whether a Service change (old → cur; nil when
// added or deleted) can change a plan: only ironlb's Services are read.
func serviceMatters(old, cur *lbService) bool {
	return old != nil && old.ours || cur != nil && cur.ours
}

// needsEndpoints reports whether the plans read the endpoints of svc (nil:
// none): ironlb's, with externalTrafficPolicy Local. For the others they
// read nothing of them.
func needsEndpoints(svc *lbService) bool {
	return svc != nil && svc.ours && svc.local
}

// nodeMatters reports whether a Node change can change a plan or the
// membership: a new or deleted Node, or one whose kept fields changed.
func nodeMatters(old, cur *v1.Node) bool {
	if old == nil || cur == nil {
		return true
	}
	return !maps.Equal(old.Labels, cur.Labels) ||
		!slices.Equal(old.Status.Addresses, cur.Status.Addresses) ||
		!slices.Equal(old.Status.Conditions, cur.Status.Conditions)
}

// bgpPeerMatters reports whether a BGPPeer change (old → cur; nil when
// added or deleted) can change a plan or a session: a new or deleted
// BGPPeer, or one whose spec (its generation) or labels (which pools select
// it by) changed. A change of its status alone, which every speaker writes,
// changes neither.
func bgpPeerMatters(old, cur any) bool {
	o, ok := old.(*unstructured.Unstructured)
	c, ok2 := cur.(*unstructured.Unstructured)
	if !ok || !ok2 {
		return true
	}
	return o.GetUID() != c.GetUID() || o.GetGeneration() != c.GetGeneration() || !maps.Equal(o.GetLabels(), c.GetLabels())
}

func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// sliceService is the Service an EndpointSlice belongs to.
func sliceService(es *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name := es.Labels[discoveryv1.LabelServiceName]
	return types.NamespacedName{Namespace: es.Namespace, Name: name}, name != ""
}

// unwrap returns the object inside a deletion tombstone.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}
