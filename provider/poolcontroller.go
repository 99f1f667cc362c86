package provider

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// statusWriteDelay coalesces pool status writes: a burst of allocations becomes one write.
const statusWriteDelay = 500 * time.Millisecond

// PoolController feeds IPPools to the allocator and keeps their status current. After every
// change of the pools it signals changes; takeMoved tells which Services the change moved.
type PoolController struct {
	cloud    *Cloud
	client   dynamic.Interface
	informer cache.SharedIndexInformer
	factory  dynamicinformer.DynamicSharedInformerFactory
	dirty    chan struct{}
	changed  chan struct{}
	loaded   chan struct{} // closed once the allocator has every pool of the first list
	known    chan struct{} // closed by HoldersKnown
	knownSet sync.Once

	mu      sync.Mutex
	invalid map[string]error // pools the allocator could not use, by name
	moved   map[string]bool  // Services moved by pool changes since the last takeMoved

	protection poolProtection
}

// NewPoolController watches IPPools through client.
func NewPoolController(cloud *Cloud, client dynamic.Interface, resync time.Duration) *PoolController {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, resync)
	c := &PoolController{
		cloud:      cloud,
		client:     client,
		factory:    factory,
		informer:   factory.ForResource(v1alpha1.IPPoolResource).Informer(),
		dirty:      make(chan struct{}, 1),
		changed:    make(chan struct{}, 1),
		loaded:     make(chan struct{}),
		known:      make(chan struct{}),
		invalid:    map[string]error{},
		moved:      map[string]bool{},
		protection: poolProtection{written: map[types.UID]bool{}},
	}
	_, _ = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(interface{}) { c.refresh() },
		UpdateFunc: func(old, cur interface{}) {
			// Status writes (ours) and finalizers change neither the generation nor whether
			// the pool is being deleted.
			o, n := old.(*unstructured.Unstructured), cur.(*unstructured.Unstructured)
			if o.GetGeneration() != n.GetGeneration() || (o.GetDeletionTimestamp() == nil) != (n.GetDeletionTimestamp() == nil) {
				c.refresh()
			} else if !slices.Equal(o.GetFinalizers(), n.GetFinalizers()) {
				c.markDirty()
			}
		},
		DeleteFunc: func(interface{}) { c.refresh() },
	})
	return c
}

// Run watches IPPools and gives them to the allocator until ctx ends. Once HoldersKnown is
// called, it also writes the pools' status and finalizers: before, the allocator does not know
// which addresses Services hold, and the counts and finalizers would be wrong.
func (c *PoolController) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	c.factory.Start(ctx.Done())
	if !cache.WaitForNamedCacheSync("ironlb-ippool", ctx.Done(), c.informer.HasSynced) {
		return
	}
	// The event handlers may still be behind the synced store; this refresh reads all of it.
	c.refresh()
	close(c.loaded)
	select {
	case <-ctx.Done():
		return
	case <-c.known:
	}
	c.markDirty()
	c.runStatusWriter(ctx)
}

// HasSynced reports whether the allocator has every pool of the first list of IPPools.
func (c *PoolController) HasSynced() bool {
	select {
	case <-c.loaded:
		return true
	default:
		return false
	}
}

// HoldersKnown says that the allocator knows every address Services hold (see Run). A service
// controller calls it once it restored them; one that restores nothing, at once.
func (c *PoolController) HoldersKnown() { c.knownSet.Do(func() { close(c.known) }) }

// changes is signalled after the pools changed: Services waiting for an address may fit now,
// and takeMoved returns the Services whose condition and ironlb.io/allocated-from may need
// rewriting.
func (c *PoolController) changes() <-chan struct{} { return c.changed }

// takeMoved returns the Services pool changes moved (see ipam.Allocator.SetPools) since the last
// call.
func (c *PoolController) takeMoved() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.moved))
	for key := range c.moved {
		out = append(out, key)
	}
	clear(c.moved)
	sort.Strings(out)
	return out
}

func (c *PoolController) list() []*v1alpha1.IPPool {
	objs := c.informer.GetStore().List()
	out := make([]*v1alpha1.IPPool, 0, len(objs))
	for _, o := range objs {
		p := &v1alpha1.IPPool{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.(*unstructured.Unstructured).Object, p); err != nil {
			utilruntime.HandleError(fmt.Errorf("read IPPool %s: %w", o.(*unstructured.Unstructured).GetName(), err))
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// refresh gives the allocator the current pools. Holdings never change here; the Services the
// change moved are kept for takeMoved.
func (c *PoolController) refresh() {
	var pools []ipam.Pool
	invalid := map[string]error{}
	for _, p := range c.list() {
		ap, err := poolFor(p)
		if err != nil {
			invalid[p.Name] = err
			klog.InfoS("IPPool cannot be used", "pool", p.Name, "err", err)
			continue
		}
		pools = append(pools, ap)
	}
	c.mu.Lock()
	c.invalid = invalid
	for _, key := range c.cloud.alloc.SetPools(pools) {
		c.moved[key] = true
	}
	c.mu.Unlock()
	c.markDirty()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *PoolController) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// runStatusWriter writes pool status after changes, coalescing bursts.
func (c *PoolController) runStatusWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.dirty:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(statusWriteDelay):
		}
		if err := c.writeStatuses(ctx); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Writing IPPool status failed; will retry")
			c.markDirty()
		}
	}
}

// writeStatuses puts the finalizer on the pools that announce some Service's address and takes
// it off the others, then writes every pool's status.
func (c *PoolController) writeStatuses(ctx context.Context) error {
	c.mu.Lock()
	invalid := c.invalid
	c.mu.Unlock()
	users := c.cloud.alloc.PoolUsers()
	var firstErr error
	pools := c.list()
	for _, p := range pools {
		err := c.reconcileFinalizer(ctx, p, users[p.Name].Count)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, p := range pools {
		st, known := c.cloud.alloc.PoolStatus(p.Name)
		want := poolStatus(p, st, known, invalid[p.Name], users[p.Name])
		recordPoolMetrics(p.Name, want)
		if sameStatus(p.Status, want) {
			continue
		}
		if err := c.applyStatus(ctx, p.Name, want); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (c *PoolController) applyStatus(ctx context.Context, name string, st v1alpha1.IPPoolStatus) error {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Status            v1alpha1.IPPoolStatus `json:"status"`
	}{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status:     st,
	})
	if err != nil {
		return err
	}
	_, err = c.client.Resource(v1alpha1.IPPoolResource).ApplyStatus(ctx, name, &unstructured.Unstructured{Object: obj}, applyOptions)
	if apierrors.IsNotFound(err) {
		return nil // deleted since it was listed
	}
	if err != nil {
		return fmt.Errorf("write status of IPPool %s: %w", name, err)
	}
	return nil
}

// sameStatus compares statuses without the conditions' transition times.
func sameStatus(a, b v1alpha1.IPPoolStatus) bool {
	strip := func(s v1alpha1.IPPoolStatus) v1alpha1.IPPoolStatus {
		s.Conditions = append([]metav1.Condition(nil), s.Conditions...)
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}

func recordPoolMetrics(pool string, st v1alpha1.IPPoolStatus) {
	for fam, fc := range map[ipam.Family]*v1alpha1.FamilyCount{ipam.IPv4: st.IPv4, ipam.IPv6: st.IPv6} {
		if fc == nil {
			continue
		}
		for state, v := range map[string]string{"capacity": fc.Capacity, "allocated": fc.Allocated} {
			f, _ := strconv.ParseFloat(v, 64)
			poolAddresses.WithLabelValues(pool, string(fam), state).Set(f)
		}
	}
}
