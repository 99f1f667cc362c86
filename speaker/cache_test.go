package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/lbclass"
)

var classifier = lbclass.Classifier{Class: "ironlb.io/ironlb", HandleClassless: true}

func ofClass(s *v1.Service, class string) *v1.Service {
	s.Spec.LoadBalancerClass = &class
	return s
}

func clusterIP(s *v1.Service) *v1.Service {
	s.Spec.Type = v1.ServiceTypeClusterIP
	return s
}

func TestNeedsEndpoints_OnlyIronlbsLocalServices(t *testing.T) {
	for _, tt := range []struct {
		name string
		svc  *v1.Service
		want bool
	}{
		{"no Service", nil, false},
		{"ClusterIP Service", clusterIP(local(service("a", "p", "172.31.0.1"))), false},
		{"LoadBalancer of another class", ofClass(local(service("a", "p", "172.31.0.1")), "example.com/other"), false},
		{"ironlb's, externalTrafficPolicy Cluster", service("a", "p", "172.31.0.1"), false},
		{"ironlb's, Local, no address yet", local(service("a", "p")), true},
		{"ironlb's, Local", local(service("a", "p", "172.31.0.1")), true},
	} {
		if got := needsEndpoints(cached(tt.svc)); got != tt.want {
			t.Errorf("%s: needsEndpoints = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The endpoints store keeps the slices of wanted Services only, cut down,
// and asks for a sync only when the nodes of a kept slice change.
func TestLocalEndpoints_KeepsOnlyWhatThePlansRead(t *testing.T) {
	wanted := map[types.NamespacedName]bool{key("lb"): true}
	syncs := 0
	e := newLocalEndpoints(nil, func(svc types.NamespacedName) bool { return wanted[svc] }, func(matters bool) {
		if matters {
			syncs++
		}
	}, klog.Background())
	other := endpointSlice("plain", ep{node: "n1", ready: true})
	lb := endpointSlice("lb", ep{node: "n1", ready: true})
	step := func(what string, do func() error, wantSyncs, wantKept int) {
		t.Helper()
		before := syncs
		if err := do(); err != nil {
			t.Fatal(err)
		}
		if syncs-before != wantSyncs || e.size() != wantKept {
			t.Errorf("%s: %d syncs and %d slices kept, want %d and %d", what, syncs-before, e.size(), wantSyncs, wantKept)
		}
	}
	step("first list", func() error { return e.Replace([]any{other, lb}, "1") }, 1, 1)
	if !e.hasSynced() {
		t.Error("not synced after the first list")
	}
	step("another Service's slice changes", func() error { return e.Update(endpointSlice("plain", ep{node: "n2", ready: true})) }, 0, 1)
	step("another Service's slice is added", func() error {
		es := endpointSlice("plain", ep{node: "n3", ready: true})
		es.Name = "plain-y"
		return e.Add(es)
	}, 0, 1)
	step("the wanted slice, same nodes", func() error {
		return e.Update(endpointSlice("lb", ep{node: "n1", ready: true}, ep{node: "n1", ready: true}))
	}, 0, 1)
	step("the wanted slice moves", func() error { return e.Update(endpointSlice("lb", ep{node: "n2", ready: true})) }, 1, 1)
	if got := e.of(key("lb")); len(got) != 1 || *got[0].Endpoints[0].NodeName != "n2" {
		t.Errorf("kept %v, want the slice on n2", got)
	}
	step("another Service's slice is deleted", func() error { return e.Delete(other) }, 0, 1)
	step("the wanted slice is deleted", func() error {
		return e.Delete(cache.DeletedFinalStateUnknown{Key: "default/lb-x", Obj: lb})
	}, 1, 0)
	step("a relist with nothing wanted changed", func() error { return e.Replace([]any{other}, "2") }, 0, 0)
}

func TestServiceMatters_OnlyIronlbsServices(t *testing.T) {
	ours, other := service("a", "p", "172.31.0.1"), ofClass(service("a", "p"), "example.com/other")
	for _, tt := range []struct {
		name     string
		old, cur *v1.Service
		want     bool
	}{
		{"ours added", nil, ours, true},
		{"ours deleted", ours, nil, true},
		{"other class added", nil, other, false},
		{"other class updated", other, other, false},
		{"ours turned ClusterIP", ours, clusterIP(service("a", "p")), true},
	} {
		if got := serviceMatters(cached(tt.old), cached(tt.cur)); got != tt.want {
			t.Errorf("%s: serviceMatters = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A BGPPeer's spec, labels or identity can change a plan or a session and
// queue a sync; a change of its status alone (every speaker writes its
// entry) has only the condition writer look at the sessions again.
func TestBGPPeerChange_StatusAloneQueuesOnlyTheConditionWriter(t *testing.T) {
	peer := func(edit func(u *unstructured.Unstructured)) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "ironlb.io/v1alpha1", "kind": "BGPPeer",
			"metadata": map[string]any{"name": "tor", "uid": "u1", "generation": int64(1), "labels": map[string]any{"fabric": "a"}},
			"spec":     map[string]any{"address": "172.31.0.1", "asn": int64(64512)},
			"status":   map[string]any{"nodes": []any{map[string]any{"node": "n1", "state": "Active"}}},
		}}
		if edit != nil {
			edit(u)
		}
		return u
	}
	base := peer(nil)
	for _, tt := range []struct {
		name     string
		old, cur any
		want     string // the key queued
	}{
		{"added", nil, base, syncKey},
		{"deleted", base, nil, syncKey},
		{"deleted, seen late", base, cache.DeletedFinalStateUnknown{Key: "tor", Obj: base}, syncKey},
		{"spec changed (new generation)", base, peer(func(u *unstructured.Unstructured) {
			u.Object["spec"].(map[string]any)["asn"] = int64(64513)
			u.SetGeneration(2)
		}), syncKey},
		{"labels changed", base, peer(func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"fabric": "b"}) }), syncKey},
		{"replaced (new UID)", base, peer(func(u *unstructured.Unstructured) { u.SetUID("u2") }), syncKey},
		{"a session came up", base, peer(func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"nodes": []any{map[string]any{"node": "n1", "state": "Established"}}}
			u.SetResourceVersion("7")
		}), sessionsKey},
		{"resync, nothing changed", base, base, sessionsKey},
	} {
		s := &Speaker{queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
		h := s.onBGPPeerChange()
		switch {
		case tt.old == nil:
			h.OnAdd(tt.cur, false)
		case tt.cur == nil:
			h.OnDelete(tt.old)
		default:
			if d, ok := tt.cur.(cache.DeletedFinalStateUnknown); ok {
				h.OnDelete(d)
			} else {
				h.OnUpdate(tt.old, tt.cur)
			}
		}
		if s.queue.Len() != 1 {
			t.Fatalf("%s: %d keys queued, want 1", tt.name, s.queue.Len())
		}
		if got, _ := s.queue.Get(); got != tt.want {
			t.Errorf("%s: queued %q, want %q", tt.name, got, tt.want)
		}
		s.queue.ShutDown()
	}
}

func mustSlim(t *testing.T, f cache.TransformFunc, obj any) any {
	t.Helper()
	out, err := f(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSlimSlice_KeepsTheNodesWithReadyOrServingEndpointsOnce(t *testing.T) {
	es := endpointSlice("a", ep{node: "n2", ready: true}, ep{node: "n1", serving: true}, ep{node: "n2", ready: true}, ep{node: "n3"})
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"172.31.9.9"}}) // no node
	es.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	slim := newSliceSlimmer()
	got := mustSlim(t, slim.transform, es).(*discoveryv1.EndpointSlice)
	if want := localEndpointNodes([]*discoveryv1.EndpointSlice{es}); !maps.Equal(localEndpointNodes([]*discoveryv1.EndpointSlice{got}), want) {
		t.Errorf("nodes = %v, want %v", localEndpointNodes([]*discoveryv1.EndpointSlice{got}), want)
	}
	if len(got.Endpoints) != 2 || *got.Endpoints[0].NodeName != "n1" || got.Endpoints[0].Addresses != nil {
		t.Errorf("endpoints = %+v, want one per node (n1, n2), without addresses", got.Endpoints)
	}
	if got.ManagedFields != nil || got.Labels[discoveryv1.LabelServiceName] != "a" {
		t.Errorf("meta = %+v, want the service-name label and no managedFields", got.ObjectMeta)
	}
	other := mustSlim(t, slim.transform, endpointSlice("b", ep{node: "n1", ready: true})).(*discoveryv1.EndpointSlice)
	if other.Endpoints[0].NodeName != got.Endpoints[0].NodeName {
		t.Error("node names are not shared between slices")
	}
}

// The plans computed from cut-down objects are those computed from whole ones.
func TestSlimObjects_PlansAreUnchanged(t *testing.T) {
	svcs := []*v1.Service{
		service("a", "l2", "172.31.0.1"),
		local(service("b", "l2", "172.31.0.2")),
		local(service("c", "bgp", "172.31.1.1")),
	}
	svcs[0].ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	svcs[0].Spec.Ports = []v1.ServicePort{{Port: 80}}
	svcs[1].Status.Conditions = []metav1.Condition{
		{Type: "other", Status: metav1.ConditionTrue},
		{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Message: "172.31.0.2 by n2 on eth0 (ARP)"},
	}
	eps := []*discoveryv1.EndpointSlice{
		endpointSlice("b", ep{node: "n2", ready: true}, ep{node: "n3", serving: true}),
		endpointSlice("c", ep{node: "n1", ready: true}, ep{node: "n3"}),
	}
	nodes := []*v1.Node{node("n1", nil, false), node("n2", nil, false), node("n3", nil, true)}
	pools := []*v1alpha1.IPPool{l2Pool("l2", nil, nil, "172.31.0.0/24"), bgpPool("bgp", "172.31.1.0/24")}
	peers := []*v1alpha1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}}}
	info := map[string]string{infoDefaultIf: "eth0", infoIfPrefix + "eth0": ifUp}

	build := func(slimSlice, slimN cache.TransformFunc) inputs {
		in := inputs{slices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{}, pools: pools, nodes: map[string]*v1.Node{},
			alive: map[string]map[string]string{"n1": info, "n2": info, "n3": info}, recorded: map[netip.Addr]string{}}
		for _, s := range svcs {
			got := mustSlim(t, slimService(classifier), s.DeepCopy()).(*lbService)
			in.services = append(in.services, got)
			maps.Copy(in.recorded, announcedOwners(got))
		}
		for _, es := range eps {
			got := mustSlim(t, slimSlice, es.DeepCopy()).(*discoveryv1.EndpointSlice)
			key, _ := sliceService(got)
			in.slices[key] = append(in.slices[key], got)
		}
		for _, n := range nodes {
			got := mustSlim(t, slimN, n.DeepCopy()).(*v1.Node)
			in.nodes[got.Name] = got
		}
		return in
	}
	same := func(obj any) (any, error) { return obj, nil }
	whole, slim := build(same, same), build(newSliceSlimmer().transform, slimNode)
	say := func(in inputs) []string {
		plan, notAnnounced := l2Plan(in)
		bplan := bgpPlan(in, peers)
		var out []string
		for _, svc := range in.services {
			key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
			out = append(out, fmt.Sprintf("%s: %+v", key, announcedCondition(svc, plan, bplan, allUp(peers, "n1", "n2", "n3"), notAnnounced[key], "")))
		}
		return out
	}
	if a, b := say(whole), say(slim); !slices.Equal(a, b) {
		t.Errorf("conditions from cut-down objects:\n%s\nwant\n%s", strings.Join(b, "\n"), strings.Join(a, "\n"))
	}
}

// Every field of an lbService is read somewhere; each must come from the
// Service, and of a Service that is not ironlb's only its identity.
// recordOf gives svc ironlb-ccm's record of its addresses.
func recordOf(svc *v1.Service, record string) *v1.Service {
	svc.Annotations = map[string]string{v1alpha1.AnnotationAllocatedAddresses: record}
	return svc
}

func TestNewLBService_KeepsEveryFieldRead(t *testing.T) {
	full := local(service("a", "p", "172.31.0.1", "::ffff:172.31.0.2", "fd00::1"))
	full.UID, full.ResourceVersion, full.Generation = "uid-a", "42", 7
	full.Labels = map[string]string{"big": "label"}
	full.Status.LoadBalancer.Ingress = append(full.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{Hostname: "lb.example.com"})
	announced := metav1.Condition{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAnnounced,
		Message: "172.31.0.1 by n1 on eth0 (ARP)", ObservedGeneration: 7, LastTransitionTime: metav1.Unix(100, 0)}
	full.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue}, announced}
	addrs := []netip.Addr{netip.MustParseAddr("172.31.0.1"), netip.MustParseAddr("172.31.0.2"), netip.MustParseAddr("fd00::1")}

	for _, tc := range []struct {
		name string
		svc  *v1.Service
		want lbService
	}{
		{"ironlb's", full, lbService{
			Namespace: "default", Name: "a", UID: "uid-a", ResourceVersion: "42", Generation: 7,
			ours: true, local: true, allocatedFrom: "p", record: addrs, recorded: true,
			addrs: addrs, announced: &announced,
		}},
		{"externalTrafficPolicy Cluster, no condition", service("b", "p", "172.31.0.3"), lbService{
			Namespace: "default", Name: "b", Generation: 3, ours: true, allocatedFrom: "p", record: []netip.Addr{netip.MustParseAddr("172.31.0.3")}, recorded: true,
			addrs: []netip.Addr{netip.MustParseAddr("172.31.0.3")},
		}},
		{"no address yet", service("c", ""), lbService{Namespace: "default", Name: "c", Generation: 3, ours: true}},
		{"a record that names no address", recordOf(service("d", ""), ""), lbService{Namespace: "default", Name: "d", Generation: 3, ours: true, recorded: true}},
		{"another class keeps only its identity", ofClass(full.DeepCopy(), "example.com/other"), lbService{
			Namespace: "default", Name: "a", UID: "uid-a", ResourceVersion: "42",
		}},
		{"ClusterIP keeps only its identity", clusterIP(full.DeepCopy()), lbService{
			Namespace: "default", Name: "a", UID: "uid-a", ResourceVersion: "42",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mustSlim(t, slimService(classifier), tc.svc).(*lbService)
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
			if m, err := meta.Accessor(got); err != nil || m.GetNamespace() != tc.want.Namespace || m.GetName() != tc.want.Name {
				t.Errorf("the cache cannot key it: %v, %v", m, err)
			}
		})
	}
}

// A burst of changes to the EndpointSlices of a Service that is not
// ironlb's queues no sync and leaves no trace; a change to the endpoints of
// an ironlb Service with externalTrafficPolicy Local does queue one; and
// when the other Service becomes one, its slices are listed then. Real
// informers and reflector, on a fake clientset.
func TestEndpointSliceBurstOfOtherServices_QueuesNoSyncAndLeavesNoTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake.NewClientset(
		local(service("lb", "p", "172.31.0.1")),
		clusterIP(service("plain", "")),
	)
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		v1alpha1.IPPoolResource: "IPPoolList", v1alpha1.BGPPeerResource: "BGPPeerList",
	})
	s, err := New(Config{Node: "n1", Classifier: classifier, Client: client, Dynamic: dyn, Namespace: "ironlb-system", Logger: klog.Background()})
	if err != nil {
		t.Fatal(err)
	}
	s.factory.Start(ctx.Done())
	s.dynamic.Start(ctx.Done())
	for _, inf := range []cache.SharedIndexInformer{s.services, s.nodes, s.pools, s.bgpPeers} {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			t.Fatal("caches did not sync")
		}
	}
	go s.endpoints.run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), s.endpoints.hasSynced) {
		t.Fatal("endpoints did not sync")
	}
	drain(s)

	queued := testutil.ToFloat64(syncTriggers.WithLabelValues("EndpointSlice", "queued"))
	ignored := testutil.ToFloat64(syncTriggers.WithLabelValues("EndpointSlice", "ignored"))
	esClient := client.DiscoveryV1().EndpointSlices("default")
	const burst = 100
	for i := range burst {
		es := endpointSlice("plain", ep{node: "n1", ready: true})
		es.Name = fmt.Sprintf("plain-%d", i)
		if _, err := esClient.Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		es.Endpoints[0].NodeName = new("n2")
		if _, err := esClient.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The burst, then one slice of the LoadBalancer's: when that one is in,
	// the burst before it went through the same watch.
	if _, err := esClient.Create(ctx, endpointSlice("lb", ep{node: "n1", ready: true}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "a sync for the LoadBalancer's endpoints", func() bool { return s.queue.Len() == 1 })
	if got := testutil.ToFloat64(syncTriggers.WithLabelValues("EndpointSlice", "queued")) - queued; got != 1 {
		t.Errorf("EndpointSlice changes queued %v syncs, want 1 (the burst of the ClusterIP Service's none)", got)
	}
	if got := testutil.ToFloat64(syncTriggers.WithLabelValues("EndpointSlice", "ignored")) - ignored; got != 2*burst {
		t.Errorf("EndpointSlice changes counted ignored: %v, want %d", got, 2*burst)
	}
	if got := s.endpoints.size(); got != 1 {
		t.Errorf("slices kept: %d, want 1 (the ClusterIP Service's leave no trace)", got)
	}

	// The ClusterIP Service becomes an ironlb LoadBalancer with
	// externalTrafficPolicy Local: its slices are listed once.
	svc := local(service("plain", "p", "172.31.0.2"))
	svc.ResourceVersion = ""
	if _, err := client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the slices of the Service that became a LoadBalancer", func() bool { return len(s.endpoints.of(key("plain"))) == burst })
	if got := s.endpoints.of(key("plain")); *got[0].Endpoints[0].NodeName != "n2" {
		t.Errorf("listed %v, want the slices as last updated (on n2)", got[0])
	}
}

func drain(s *Speaker) {
	for s.queue.Len() > 0 {
		key, _ := s.queue.Get()
		s.queue.Done(key)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestLocalEndpoints_OfListsInAFixedOrder: a Service's slices come in name
// order every time, so the planner sees unchanged endpoints as unchanged
// (it compares them with those it last read, in order).
func TestLocalEndpoints_OfListsInAFixedOrder(t *testing.T) {
	e := newLocalEndpoints(nil, func(types.NamespacedName) bool { return true }, func(bool) {}, klog.Background())
	var objs []any
	for _, name := range []string{"lb-d", "lb-a", "lb-c", "lb-b", "lb-e"} {
		es := endpointSlice("lb", ep{node: "n1", ready: true})
		es.Name = name
		objs = append(objs, es)
	}
	if err := e.Replace(objs, "1"); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		var names []string
		for _, es := range e.of(key("lb")) {
			names = append(names, es.Name)
		}
		if !slices.Equal(names, []string{"lb-a", "lb-b", "lb-c", "lb-d", "lb-e"}) {
			t.Fatalf("of lists %v, want name order", names)
		}
	}
}
