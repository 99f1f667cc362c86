package speaker

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// localEndpoints keeps the endpoints the plans read, and nothing else of the
// cluster's EndpointSlices: the nodes where the Services that need them
// (wanted: ironlb's, with externalTrafficPolicy Local) have a ready or
// serving endpoint. It watches every EndpointSlice, as one watch, but keeps
// only the slices of those Services, cut down (sliceSlimmer); any other
// slice is dropped on arrival and leaves no trace. A Service that becomes
// wanted later has its slices listed once (wantNow), by its label: that is
// the only request it makes after the first list.
//
// It is the store of its own reflector, so that nothing else holds the
// slices it drops.
type localEndpoints struct {
	client kubernetes.Interface
	wanted func(types.NamespacedName) bool
	// changed is told of every change the watch delivers: whether it can
	// change a plan (then it queues a sync) or is dropped.
	changed func(matters bool)
	logger  klog.Logger
	slim    *sliceSlimmer
	// fetch holds the Services whose slices are to be listed.
	fetch workqueue.TypedRateLimitingInterface[types.NamespacedName]

	mu     sync.Mutex
	kept   sliceIndex
	synced bool
	// pending are the Services that became wanted while the first full
	// list was being taken in (Replace), which may have passed them by.
	pending map[types.NamespacedName]bool
}

func newLocalEndpoints(client kubernetes.Interface, wanted func(types.NamespacedName) bool, changed func(matters bool), logger klog.Logger) *localEndpoints {
	return &localEndpoints{
		client: client, wanted: wanted, changed: changed, logger: logger, slim: newSliceSlimmer(),
		fetch:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
		kept:    newSliceIndex(),
		pending: map[types.NamespacedName]bool{},
	}
}

// run watches the EndpointSlices and lists the slices of Services that
// became wanted, until ctx ends. Start it once the Services cache has
// synced: what is wanted is read from it.
func (e *localEndpoints) run(ctx context.Context) {
	api := e.client.DiscoveryV1().EndpointSlices(metav1.NamespaceAll)
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return api.Watch(ctx, o)
		},
	}, e.client)
	r := cache.NewReflectorWithOptions(lw, &discoveryv1.EndpointSlice{}, e, cache.ReflectorOptions{Name: "speaker-endpoints", Logger: &e.logger})
	go r.RunWithContext(ctx)
	go func() {
		<-ctx.Done()
		e.fetch.ShutDown()
	}()
	for {
		svc, quit := e.fetch.Get()
		if quit {
			return
		}
		if err := e.list(ctx, svc); err != nil {
			e.logger.Error(err, "Cannot list the EndpointSlices of a Service; retrying", "service", svc)
			e.fetch.AddRateLimited(svc)
		} else {
			e.fetch.Forget(svc)
		}
		e.fetch.Done(svc)
	}
}

// hasSynced reports whether the first list arrived.
func (e *localEndpoints) hasSynced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.synced
}

// of returns the kept slices of svc.
func (e *localEndpoints) of(svc types.NamespacedName) []*discoveryv1.EndpointSlice {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*discoveryv1.EndpointSlice
	for key := range e.kept.byService[svc] {
		out = append(out, e.kept.slices[key])
	}
	// In a fixed order: the planner compares them with those it last read.
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// size is how many slices it keeps.
func (e *localEndpoints) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.kept.slices)
}

// wantNow is told that svc became wanted: its slices, dropped until now,
// are listed. Before the first full list, that list takes them in.
func (e *localEndpoints) wantNow(svc types.NamespacedName) {
	e.mu.Lock()
	synced := e.synced
	if !synced {
		e.pending[svc] = true
	}
	e.mu.Unlock()
	if synced {
		e.fetch.Add(svc)
	}
}

// forget drops the slices of svc, which is wanted no more.
func (e *localEndpoints) forget(svc types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for key := range e.kept.byService[svc] {
		delete(e.kept.slices, key)
	}
	delete(e.kept.byService, svc)
}

// list reads the slices of svc, if it is still wanted. A slice the watch
// delivered meanwhile is newer or as new, and stays.
func (e *localEndpoints) list(ctx context.Context, svc types.NamespacedName) error {
	if !e.wanted(svc) {
		return nil
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name}).String()
	got, err := e.client.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return err
	}
	added := false
	e.mu.Lock()
	for i := range got.Items {
		es := e.cut(&got.Items[i])
		if _, ok := e.kept.slices[sliceKey(es)]; ok || !e.wanted(svc) {
			continue
		}
		e.kept.put(svc, es)
		added = true
	}
	e.mu.Unlock()
	if added {
		e.changed(true)
	}
	return nil
}

func (e *localEndpoints) cut(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out, _ := e.slim.transform(es)
	return out.(*discoveryv1.EndpointSlice)
}

func sliceKey(es *discoveryv1.EndpointSlice) string { return es.Namespace + "/" + es.Name }

// sliceIndex holds cut-down slices by key and by Service.
type sliceIndex struct {
	slices    map[string]*discoveryv1.EndpointSlice    // by namespace/name
	byService map[types.NamespacedName]map[string]bool // slice keys
}

func newSliceIndex() sliceIndex {
	return sliceIndex{slices: map[string]*discoveryv1.EndpointSlice{}, byService: map[types.NamespacedName]map[string]bool{}}
}

func (x sliceIndex) put(svc types.NamespacedName, es *discoveryv1.EndpointSlice) {
	key := sliceKey(es)
	x.slices[key] = es
	if x.byService[svc] == nil {
		x.byService[svc] = map[string]bool{}
	}
	x.byService[svc][key] = true
}

// remove drops the slice key, reporting whether it was there.
func (x sliceIndex) remove(key string) bool {
	es, ok := x.slices[key]
	if !ok {
		return false
	}
	delete(x.slices, key)
	svc, _ := sliceService(es)
	delete(x.byService[svc], key)
	if len(x.byService[svc]) == 0 {
		delete(x.byService, svc)
	}
	return true
}

// The reflector's store: it keeps what is wanted, and queues a sync when the
// nodes of a kept slice change.

func (e *localEndpoints) Add(obj any) error    { e.upsert(obj); return nil }
func (e *localEndpoints) Update(obj any) error { e.upsert(obj); return nil }
func (e *localEndpoints) Resync() error        { return nil }

func (e *localEndpoints) upsert(obj any) {
	raw, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	svc, named := sliceService(raw)
	key := sliceKey(raw)
	e.mu.Lock()
	prev := e.kept.slices[key]
	if !named || !e.wanted(svc) {
		had := e.kept.remove(key)
		e.mu.Unlock()
		e.changed(had)
		return
	}
	es := e.cut(raw)
	e.kept.put(svc, es)
	e.mu.Unlock()
	e.changed(prev == nil || !sameNodes(prev, es))
}

func (e *localEndpoints) Delete(obj any) error {
	if es, ok := unwrap(obj).(*discoveryv1.EndpointSlice); ok {
		e.mu.Lock()
		had := e.kept.remove(sliceKey(es))
		e.mu.Unlock()
		e.changed(had)
	}
	return nil
}

func (e *localEndpoints) Replace(list []any, _ string) error {
	e.mu.Lock()
	clear(e.pending) // what became wanted until now, this list takes in
	e.mu.Unlock()
	kept := newSliceIndex()
	for _, obj := range list {
		raw, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		if svc, named := sliceService(raw); named && e.wanted(svc) {
			kept.put(svc, e.cut(raw))
		}
	}
	e.mu.Lock()
	same := maps.EqualFunc(e.kept.slices, kept.slices, sameNodes)
	e.kept, e.synced = kept, true
	late := maps.Clone(e.pending)
	clear(e.pending)
	e.mu.Unlock()
	for svc := range late {
		e.fetch.Add(svc)
	}
	if !same {
		e.changed(true)
	}
	return nil
}

// sameNodes reports whether two cut-down slices name the same nodes.
func sameNodes(a, b *discoveryv1.EndpointSlice) bool {
	if len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for i := range a.Endpoints {
		if !ptrEqual(a.Endpoints[i].NodeName, b.Endpoints[i].NodeName) {
			return false
		}
	}
	return true
}
