package provider

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/reference"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/lbclass"
	"github.com/ironlb/ironlb/internal/svcstatus"
	"github.com/ironlb/ironlb/provider/ipam"
)

var cacheNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fullService is a Service as the API server returns it: with what ironlb reads and much that
// it does not.
func fullService() *v1.Service {
	family := v1.IPFamilyPolicyPreferDualStack
	class := v1alpha1.DefaultLoadBalancerClass
	vip := v1.LoadBalancerIPModeVIP
	return &v1.Service{
		TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "web", Namespace: "shop", UID: "5d1c6a8e-0000-4000-8000-000000000001", ResourceVersion: "4711",
			Generation:        3,
			CreationTimestamp: metav1.NewTime(cacheNow.Add(-time.Hour)),
			Labels:            map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{
				v1alpha1.AnnotationPool:                     "public",
				v1alpha1.AnnotationSharingKey:               "shop",
				v1alpha1.AnnotationAllocatedFrom:            "public",
				v1alpha1.AnnotationAllocatedAddresses:       "172.31.10.5,fd31::5",
				"kubectl.kubernetes.io/last-applied-config": strings.Repeat("x", 2000),
				"example.com/owner":                         "team-a",
			},
			Finalizers:      []string{v1alpha1.LoadBalancerCleanupFinalizer, "example.com/keep"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "owner"}},
			ManagedFields: []metav1.ManagedFieldsEntry{
				managed("kubectl-client-side-apply", metav1.ManagedFieldsOperationUpdate, "", fieldsSpecOnly, cacheNow.Add(-time.Hour)),
				managed(v1alpha1.FieldManagerCCM, metav1.ManagedFieldsOperationApply, "status", fieldsCCM, cacheNow.Add(-time.Hour)),
				managed(v1alpha1.FieldManagerSpeaker, metav1.ManagedFieldsOperationApply, "status", fieldsSpeaker, cacheNow.Add(-time.Minute)),
			},
		},
		Spec: v1.ServiceSpec{
			Type:              v1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			Selector:          map[string]string{"app": "web"},
			ClusterIP:         "10.96.0.10",
			ClusterIPs:        []string{"10.96.0.10", "fd00:96::10"},
			IPFamilies:        []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol},
			IPFamilyPolicy:    &family,
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http"), NodePort: 31080},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 31053},
			},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:   32000,
		},
		Status: v1.ServiceStatus{
			LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
				{IP: "172.31.10.5", IPMode: &vip, Ports: []v1.PortStatus{{Port: 80, Protocol: v1.ProtocolTCP}, {Port: 53, Protocol: v1.ProtocolUDP}}},
				{IP: "fd31::5", IPMode: &vip, Ports: []v1.PortStatus{{Port: 80, Protocol: v1.ProtocolTCP}, {Port: 53, Protocol: v1.ProtocolUDP}}},
			}},
			Conditions: []metav1.Condition{
				{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: "Announced", Message: "node-1 answers ARP"},
				{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionFalse, Reason: string(ipam.ReasonPoolExhausted),
					Message: "no free address", ObservedGeneration: 2, LastTransitionTime: metav1.NewTime(cacheNow.Add(-10 * time.Minute))},
			},
		},
	}
}

// ccmView is everything ironlb-ccm reads of a Service, each read through the code that reads it.
type ccmView struct {
	Key, LBName            string
	Reference              *v1.ObjectReference
	Handles, Classless     bool
	Touched                bool
	Deleting               bool
	Created                time.Time
	HasFinalizer           bool
	Request                ipam.Request
	RequestErr             string
	Addrs                  []netip.Addr
	Ingress                []v1.LoadBalancerIngress
	Condition              *metav1.Condition
	WaitingSince           time.Time
	Allocated              metav1.Condition
	Recorded               []netip.Addr
	RecordedBad            []string
	Conflict               string
	ConflictUntil          time.Time
	StatusForAddrs         *v1.LoadBalancerStatus
	AllocatedFrom, Written string
}

func viewOf(t *testing.T, svc *v1.Service) ccmView {
	t.Helper()
	ref, err := reference.GetReference(scheme.Scheme, svc)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	v := ccmView{
		Key:            serviceKey(svc),
		LBName:         cloudprovider.DefaultLoadBalancerName(svc),
		Reference:      ref,
		Handles:        lbclass.Classifier{Class: v1alpha1.DefaultLoadBalancerClass}.Handles(svc),
		Classless:      lbclass.Classifier{Class: "example.com/other", HandleClassless: true}.Handles(svc),
		Touched:        touched(svc),
		Deleting:       svc.DeletionTimestamp != nil,
		Created:        svc.CreationTimestamp.Time,
		HasFinalizer:   strings.Contains(strings.Join(svc.Finalizers, " "), v1alpha1.LoadBalancerCleanupFinalizer),
		Addrs:          svcstatus.Addrs(svc),
		Ingress:        svc.Status.LoadBalancer.Ingress,
		Condition:      ownCondition(svc),
		WaitingSince:   waitingSince(ownCondition(svc), cacheNow),
		StatusForAddrs: loadBalancerStatus([]netip.Addr{netip.MustParseAddr("172.31.10.6")}, svc),
		AllocatedFrom:  svc.Annotations[v1alpha1.AnnotationAllocatedFrom],
		Written:        svc.Annotations[v1alpha1.AnnotationAllocatedAddresses],
	}
	v.Request, err = requestFor(svc, map[string]string{"env": "prod"}, true)
	if err != nil {
		v.RequestErr = err.Error()
	}
	v.Allocated = allocatedCondition(svc, ipam.Result{Addrs: v.Addrs, Pool: "public"}, nil, nil)
	v.Allocated.LastTransitionTime = metav1.Time{}
	v.Recorded, v.RecordedBad = recordedAddrs(svc.Annotations)
	v.Conflict, v.ConflictUntil = conflictingWriter(svc.ManagedFields, cacheNow, standoff{})
	return v
}

// The table lists, for each field ironlb-ccm reads, a Service that sets it. Dropping any of them
// from the cache changes what ironlb reads, and fails here.
func TestTrimService_IronlbReadsTheSameOfTheTrimmedService(t *testing.T) {
	vip := v1.LoadBalancerIPModeVIP
	tests := []struct {
		name   string
		change func(*v1.Service)
	}{
		{"as it comes", func(*v1.Service) {}},
		{"another class", func(s *v1.Service) { c := "example.com/other"; s.Spec.LoadBalancerClass = &c }},
		{"classless", func(s *v1.Service) { s.Spec.LoadBalancerClass = nil }},
		{"changed to ClusterIP", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }},
		{"being deleted", func(s *v1.Service) { d := metav1.NewTime(cacheNow); s.DeletionTimestamp = &d }},
		{"without ironlb's finalizer", func(s *v1.Service) { s.Finalizers = []string{"example.com/keep"} }},
		{"spec.loadBalancerIP", func(s *v1.Service) { s.Spec.LoadBalancerIP = "172.31.10.9" }},
		{"a malformed spec.loadBalancerIP", func(s *v1.Service) { s.Spec.LoadBalancerIP = "nope" }},
		{"requested addresses", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationIPs] = "172.31.10.9,fd31::9" }},
		{"ironlb's internal annotation", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationInternal] = "true" }},
		{"another cloud's internal annotation", func(s *v1.Service) {
			s.Annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] = "true"
		}},
		{"a malformed other cloud's internal annotation", func(s *v1.Service) {
			s.Annotations["networking.gke.io/load-balancer-type"] = "Sideways"
		}},
		{"a malformed record", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationAllocatedAddresses] = "172.31.10.5,bogus" }},
		{"single stack, no policy", func(s *v1.Service) { s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}; s.Spec.IPFamilyPolicy = nil }},
		{"SCTP port", func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{{Name: "x", Protocol: v1.ProtocolSCTP, Port: 9000}}
		}},
		{"no ports", func(s *v1.Service) { s.Spec.Ports = nil }},
		{"no labels or annotations", func(s *v1.Service) { s.Labels, s.Annotations = nil, nil }},
		{"another controller wrote the ingress just now", func(s *v1.Service) {
			s.ManagedFields = append(s.ManagedFields,
				managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngressAndMsg, cacheNow.Add(-time.Second)))
		}},
		{"another controller wrote the ingress long ago", func(s *v1.Service) {
			s.ManagedFields = append(s.ManagedFields,
				managed("other-lb", metav1.ManagedFieldsOperationApply, "status", fieldsIngress, cacheNow.Add(-time.Hour)))
		}},
		{"another controller's entry without a time", func(s *v1.Service) {
			s.ManagedFields = append(s.ManagedFields,
				managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngress, time.Time{}))
		}},
		{"a hostname in the ingress", func(s *v1.Service) {
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{Hostname: "lb.example.com", IPMode: &vip}}
		}},
		{"no condition of ironlb's", func(s *v1.Service) { s.Status.Conditions = s.Status.Conditions[:1] }},
		{"allocated", func(s *v1.Service) {
			s.Status.Conditions[1] = metav1.Condition{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue,
				Reason: ReasonRecordedAddressTaken, Message: "172.31.10.5,fd31::5 from pool public; recorded address 172.31.10.4 is held by a/b"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := fullService()
			tt.change(full)
			want := viewOf(t, full)
			obj, err := trimService(full.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			if got := viewOf(t, obj.(*cachedService).service()); !reflect.DeepEqual(got, want) {
				t.Errorf("ironlb reads differently from the trimmed Service:\n got %s\nwant %s", dump(got), dump(want))
			}
		})
	}
}

func dump(v ccmView) string {
	var b strings.Builder
	rv := reflect.ValueOf(v)
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Field(i)
		s := fmt.Sprintf("%+v", f.Interface())
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			s = fmt.Sprintf("%+v", f.Elem().Interface())
		}
		fmt.Fprintf(&b, "\n  %s: %s", rv.Type().Field(i).Name, s)
	}
	return b.String()
}

// Changes that make ironlb act must still show between two trimmed copies, or the update
// handler drops them.
func TestTrimService_ChangesThatMatterStillShow(t *testing.T) {
	tests := []struct {
		name   string
		change func(*v1.Service)
	}{
		{"label", func(s *v1.Service) { s.Labels["tier"] = "back" }},
		{"pool annotation", func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationPool] = "private" }},
		{"other cloud's internal annotation", func(s *v1.Service) {
			s.Annotations["service.beta.kubernetes.io/azure-load-balancer-internal"] = "true"
		}},
		{"finalizer", func(s *v1.Service) { s.Finalizers = nil }},
		{"deletion", func(s *v1.Service) { d := metav1.NewTime(cacheNow); s.DeletionTimestamp = &d }},
		{"type", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort }},
		{"class", func(s *v1.Service) { s.Spec.LoadBalancerClass = nil }},
		{"port", func(s *v1.Service) { s.Spec.Ports[0].Port = 8080 }},
		{"protocol", func(s *v1.Service) { s.Spec.Ports[1].Protocol = v1.ProtocolTCP }},
		{"families", func(s *v1.Service) { s.Spec.IPFamilies = s.Spec.IPFamilies[:1] }},
		{"ingress", func(s *v1.Service) { s.Status.LoadBalancer.Ingress = nil }},
		{"own condition", func(s *v1.Service) { s.Status.Conditions[1].Message = "changed" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := fullService(), fullService()
			tt.change(cur)
			o, _ := trimService(old)
			c, _ := trimService(cur)
			if !o.(*cachedService).changed(c.(*cachedService)) {
				t.Error("the change does not show between the trimmed Services")
			}
		})
	}
}

func TestTrimService_DropsWhatIronlbNeverReads(t *testing.T) {
	full := fullService()
	full.ManagedFields = append(full.ManagedFields,
		managed("other-lb", metav1.ManagedFieldsOperationUpdate, "status", fieldsIngressAndMsg, cacheNow.Add(-time.Second)))
	obj, _ := trimService(full)
	svc := obj.(*cachedService).service()

	wantAnn := map[string]string{
		v1alpha1.AnnotationPool:               "public",
		v1alpha1.AnnotationSharingKey:         "shop",
		v1alpha1.AnnotationAllocatedFrom:      "public",
		v1alpha1.AnnotationAllocatedAddresses: "172.31.10.5,fd31::5",
	}
	if !reflect.DeepEqual(svc.Annotations, wantAnn) {
		t.Errorf("annotations = %v, want only ironlb's %v", svc.Annotations, wantAnn)
	}
	if len(svc.ManagedFields) != 1 || svc.ManagedFields[0].Manager != "other-lb" ||
		string(svc.ManagedFields[0].FieldsV1.Raw) != fieldsIngress {
		t.Errorf("managedFields = %+v, want only other-lb's, owning only the ingress", svc.ManagedFields)
	}
	if len(svc.Status.Conditions) != 1 || svc.Status.Conditions[0].Type != v1alpha1.ConditionIPAllocated {
		t.Errorf("conditions = %+v, want only %s", svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" || p.NodePort != 0 || p.TargetPort != (intstr.IntOrString{}) {
			t.Errorf("port %+v keeps more than protocol and port", p)
		}
	}
	if svc.Spec.Selector != nil || svc.Spec.ClusterIPs != nil || svc.Spec.ClusterIP != "" || svc.Spec.HealthCheckNodePort != 0 ||
		svc.Spec.ExternalTrafficPolicy != "" || svc.OwnerReferences != nil {
		t.Errorf("spec or metadata keeps fields ironlb never reads: %+v %+v", svc.Spec, svc.ObjectMeta)
	}
}

func TestTrimService_NoManagedFieldsWhenNoOtherControllerWritesTheIngress(t *testing.T) {
	obj, _ := trimService(fullService())
	if mf := obj.(*cachedService).ingressWriters; mf != nil {
		t.Errorf("managedFields = %+v, want none", mf)
	}
}

func TestTrimService_TombstonesPassThrough(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: fullService()}
	got, err := trimService(tomb)
	if err != nil || !reflect.DeepEqual(got, tomb) {
		t.Errorf("trimService(tombstone) = %v, %v; want it unchanged", got, err)
	}
}

func TestTrimService_IsIdempotent(t *testing.T) {
	once, _ := trimService(fullService())
	twice, _ := trimService(once.(*cachedService).service().DeepCopy())
	if !reflect.DeepEqual(once, twice) {
		t.Errorf("trimming twice gives\n%+v\nnot\n%+v", twice, once)
	}
}

func TestTrimNamespace_KeepsNameAndLabels(t *testing.T) {
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u", ResourceVersion: "7",
		Labels: map[string]string{"env": "prod"}, Annotations: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: v1.NamespaceSpec{Finalizers: []v1.FinalizerName{v1.FinalizerKubernetes}}}
	got, _ := trimNamespace(ns)
	want := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u", ResourceVersion: "7", Labels: map[string]string{"env": "prod"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trimNamespace = %+v, want %+v", got, want)
	}
}

func TestTrimService_CommonValuesAreShared(t *testing.T) {
	// As the informer gets them: decoded, each with strings of its own.
	decoded := func() *v1.Service {
		data, err := json.Marshal(fullService())
		if err != nil {
			t.Fatal(err)
		}
		var svc v1.Service
		if err := json.Unmarshal(data, &svc); err != nil {
			t.Fatal(err)
		}
		return &svc
	}
	a, _ := trimService(decoded())
	b, _ := trimService(decoded())
	x, y := a.(*cachedService).service(), b.(*cachedService).service()
	one := func(s *v1.Service) *v1.Service {
		s = s.DeepCopy()
		s.Finalizers = []string{v1alpha1.LoadBalancerCleanupFinalizer}
		o, _ := trimService(s)
		return o.(*cachedService).service()
	}
	p, q := one(fullService()), one(fullService())
	switch {
	case &p.Finalizers[0] != &q.Finalizers[0]:
		t.Error("the finalizer list is not shared")
	case &x.Spec.IPFamilies[0] != &y.Spec.IPFamilies[0]:
		t.Error("the family list is not shared")
	case x.Spec.IPFamilyPolicy != y.Spec.IPFamilyPolicy:
		t.Error("the family policy is not shared")
	case x.Status.LoadBalancer.Ingress[0].IPMode != y.Status.LoadBalancer.Ingress[0].IPMode:
		t.Error("the ingress's IP mode is not shared")
	}
	// Strings held alike by many Services: decoded, each Service has its own copy.
	ca, cb := a.(*cachedService), b.(*cachedService)
	same := func(what, s1, s2 string) {
		if unsafe.StringData(s1) != unsafe.StringData(s2) {
			t.Errorf("the %s %q is not shared", what, s1)
		}
	}
	same("namespace", ca.namespace, cb.namespace)
	for i := range ca.annotations {
		same("annotation key", ca.annotations[i].key, cb.annotations[i].key)
		if ca.annotations[i].key == v1alpha1.AnnotationAllocatedFrom {
			same("pool name", ca.annotations[i].value, cb.annotations[i].value)
		}
	}
	same("condition reason", ca.condition.Reason, cb.condition.Reason)
	same("condition status", string(ca.condition.Status), string(cb.condition.Status))
}

// The informer keys cached Services by namespace and name, and the mutation cache returns the
// newer of its copy and the informer's by resource version: both read them through the object
// meta that cachedService gives. A copy that were not a runtime.Object would be ignored by the
// mutation cache, and a write would look undone until the informer showed it.
func TestCachedService_KeysAndMutationCache(t *testing.T) {
	at := func(rv string) *cachedService {
		s := fullService()
		s.ResourceVersion = rv
		return newCachedService(s)
	}
	if key, err := cache.MetaNamespaceKeyFunc(at("1")); err != nil || key != "shop/web" {
		t.Fatalf("key = %q, %v; want shop/web", key, err)
	}
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := store.Add(at("5")); err != nil {
		t.Fatal(err)
	}
	mc := cache.NewIntegerResourceVersionMutationCache(klog.Background(), store, store, time.Minute, false)
	read := func() string {
		obj, ok, err := mc.GetByKey("shop/web")
		if err != nil || !ok {
			t.Fatalf("GetByKey: %v, %v", ok, err)
		}
		return obj.(*cachedService).resourceVersion
	}
	mc.Mutation(at("7"))
	if rv := read(); rv != "7" {
		t.Errorf("after our write of version 7, the cache gives version %s", rv)
	}
	if err := store.Update(at("8")); err != nil {
		t.Fatal(err)
	}
	if rv := read(); rv != "8" {
		t.Errorf("after the informer showed version 8, the cache gives version %s", rv)
	}
	if got, err := store.ByIndex(cache.NamespaceIndex, "shop"); err != nil || len(got) != 1 {
		t.Errorf("namespace index: %d objects, %v; want 1", len(got), err)
	}
}
