package provider

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider/ipam"
)

// IPPoolResource is the REST resource of IPPools.
var IPPoolResource = schema.GroupVersionResource{Group: v1alpha1.SchemeGroupVersion.Group, Version: v1alpha1.SchemeGroupVersion.Version, Resource: "ippools"}

var everything = labels.Everything()

// statusWriteDelay coalesces pool status writes: a burst of allocations becomes one write.
const statusWriteDelay = 500 * time.Millisecond

// PoolController feeds IPPools to the allocator and keeps their status current.
type PoolController struct {
	cloud    *Cloud
	client   dynamic.Interface
	informer cache.SharedIndexInformer
	factory  dynamicinformer.DynamicSharedInformerFactory
	dirty    chan struct{}
	// onChange is told which Services' pool membership changed after the pools changed.
	onChange func(moved []string)
	services func() []*v1.Service

	mu      sync.Mutex
	invalid map[string]error  // pools the allocator could not use, by name
	seen    map[string]string // what each pool was at the last refresh, by name (see poolVersion)

	protection poolProtection
}

// NewPoolController watches IPPools through client.
func NewPoolController(cloud *Cloud, client dynamic.Interface, resync time.Duration) *PoolController {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, resync)
	c := &PoolController{
		cloud:      cloud,
		client:     client,
		factory:    factory,
		informer:   factory.ForResource(IPPoolResource).Informer(),
		dirty:      make(chan struct{}, 1),
		invalid:    map[string]error{},
		seen:       map[string]string{},
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

// Start starts the IPPool informer.
func (c *PoolController) Start(ctx context.Context) { c.factory.Start(ctx.Done()) }

// HasSynced reports whether the IPPool informer has listed every pool.
func (c *PoolController) HasSynced() bool { return c.informer.HasSynced() }

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

// refresh gives the allocator the current pools. Holdings never change here; Services whose
// addresses changed pool membership, or whose pool changed, are handed to onChange so that their
// condition and ironlb.io/allocated-from are rewritten.
func (c *PoolController) refresh() {
	var pools []ipam.Pool
	invalid := map[string]error{}
	seen := map[string]string{}
	for _, p := range c.list() {
		seen[p.Name] = poolVersion(p)
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
	changed := map[string]bool{}
	for name, v := range c.seen {
		if seen[name] != v {
			changed[name] = true
		}
	}
	c.seen = seen
	c.cloud.alloc.SetPools(pools)
	c.mu.Unlock()
	c.markDirty()
	if c.onChange != nil {
		c.onChange(c.movedServices(changed))
	}
}

// poolVersion is what a pool's Services depend on besides where their addresses are: which pool
// it is and its visibility, which may no longer fit them.
func poolVersion(p *v1alpha1.IPPool) string {
	return fmt.Sprintf("%s/%s", p.UID, p.Spec.Visibility)
}

// movedServices lists Services whose recorded pool no longer matches where their address is,
// or whose recorded pool changed what it depends on (poolVersion).
func (c *PoolController) movedServices(changed map[string]bool) []string {
	if c.services == nil {
		return nil
	}
	var moved []string
	for _, svc := range c.services() {
		from, ok := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
		if !ok {
			continue
		}
		addrs := ingressAddrs(svc)
		pool := ""
		if len(addrs) > 0 {
			pool, _ = c.cloud.alloc.PoolOf(addrs[0])
		}
		cond := findCondition(svc)
		if pool != from || changed[from] || (cond != nil && cond.Reason == EventAddressNotInPool) {
			moved = append(moved, serviceKey(svc))
		}
	}
	return moved
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
	_, err = c.client.Resource(IPPoolResource).ApplyStatus(ctx, name, &unstructured.Unstructured{Object: obj}, applyOptions)
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
