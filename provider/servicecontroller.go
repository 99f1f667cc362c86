package provider

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/svcstatus"
	"github.com/ironlb/ironlb/provider/ipam"
)

// Event reasons on Services.
const (
	EventIPAllocated         = "IPAllocated"
	EventAllocationFailed    = "AllocationFailed"
	EventIPReleased          = "IPReleased"
	EventAddressNotInPool    = "AddressNotInPool"
	EventDeprecatedRequestIP = "DeprecatedLoadBalancerIP"
)

// ServiceController gives LoadBalancer Services their addresses. It replaces the stock service
// controller of k8s.io/cloud-provider, which skips every Service that sets a loadBalancerClass:
// classless Services (with --handle-classless) and Services of ironlb's class go through this
// one code path, so they behave identically.
type ServiceController struct {
	cloud       *Cloud
	balancer    balancer
	clusterName string
	client      kubernetes.Interface
	services    cache.Store         // *cachedService (see cache.go)
	current     cache.MutationCache // services plus our own writes the informer has not shown yet
	namespaces  corelisters.NamespaceLister
	synced      []cache.InformerSynced
	queue       workqueue.TypedRateLimitingInterface[string]
	recorder    record.EventRecorder
	pools       *PoolController

	mu        sync.Mutex
	waiting   map[string]bool     // Services that failed for want of an address or a pool
	line      map[string]waiter   // of those, the ones refused for want of a free address
	standoffs map[string]standoff // Services another controller wrote the status of
}

// balancer is what the controller needs of the cloud: the upstream LoadBalancer, through which
// every allocation, confirmation and release goes, and the restore at start-up that the upstream
// interface has no method for (see loadBalancer).
type balancer interface {
	cloudprovider.LoadBalancer
	restore(svc *v1.Service, addrs []netip.Addr) error
}

// NewServiceController wires the controller to its informers. The PoolController must be built
// first: Run waits for both caches before any address is handed out.
func NewServiceController(cloud *Cloud, clusterName string, client kubernetes.Interface, services coreinformers.ServiceInformer,
	namespaces coreinformers.NamespaceInformer, pools *PoolController, recorder record.EventRecorder) *ServiceController {
	// The caches keep only what ironlb reads (see cache.go). The informers have not started
	// yet: the controller manager starts them after every controller is built. The Service
	// informer holds *cachedService, not *v1.Service: no other controller of ironlb-ccm reads
	// Services (the stock ones it runs read Nodes), and one that did would need its own.
	if err := services.Informer().SetTransform(trimService); err != nil {
		utilruntime.HandleError(fmt.Errorf("trim the Service cache: %w", err))
	}
	if err := namespaces.Informer().SetTransform(trimNamespace); err != nil {
		utilruntime.HandleError(fmt.Errorf("trim the Namespace cache: %w", err))
	}
	c := &ServiceController{
		cloud:       cloud,
		balancer:    cloud.lb,
		clusterName: clusterName,
		client:      client,
		services:    services.Informer().GetStore(),
		namespaces:  namespaces.Lister(),
		synced:      []cache.InformerSynced{services.Informer().HasSynced, namespaces.Informer().HasSynced, pools.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-service"}),
		recorder:  recorder,
		pools:     pools,
		waiting:   map[string]bool{},
		line:      map[string]waiter{},
		standoffs: map[string]standoff{},
	}
	// The mutation cache only has to bridge the time until the informer shows a write: at the
	// rate of hundreds of writes a second, 1,024 entries hold the last few seconds of writes.
	c.current = cache.NewIntegerResourceVersionMutationCacheWithOptions(klog.Background(), services.Informer().GetStore(),
		cache.MutationCacheOptions{TTL: 30 * time.Second, MaxCacheSize: 1024})
	lookup := func(ns string) map[string]string {
		if n, err := c.namespaces.Get(ns); err == nil {
			return n.Labels
		}
		return nil
	}
	cloud.lb.namespaceLabels.Store(&lookup)

	_, _ = services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(old, cur interface{}) {
			if old.(*cachedService).changed(cur.(*cachedService)) {
				c.enqueue(cur)
			}
		},
		DeleteFunc: c.enqueue,
	})
	_, _ = namespaces.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur interface{}) {
			o, n := old.(*v1.Namespace), cur.(*v1.Namespace)
			if !equality.Semantic.DeepEqual(o.Labels, n.Labels) {
				c.wakeWaiting(func(key string) bool { return strings.HasPrefix(key, n.Name+"/") })
			}
		},
	})
	return c
}

func (c *ServiceController) enqueue(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key)
}

// servicesLoop names the service controller in ironlb-ccm's probes.
const servicesLoop = "services"

// Run restores what Services already hold, then serves the queue with the given workers until
// ctx ends.
func (c *ServiceController) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	health := c.cloud.opts.Health
	health.Wait(servicesLoop, "this replica leads: waiting for the informers to sync")

	if !cache.WaitForNamedCacheSync("ironlb-service", ctx.Done(), c.synced...) {
		return
	}
	health.Wait(servicesLoop, "restoring the addresses Services hold and serving those that waited")
	// Before any new address is handed out, the allocator learns every address that Services
	// hold, oldest Service first, so that a restart or a new leader never moves an address.
	restored, conflicts := c.restore(logger)
	logger.Info("Restored addresses from Services", "services", restored, "conflicts", conflicts)
	c.pools.HoldersKnown()
	c.serveWaiting(ctx)
	health.Up(servicesLoop)

	go c.followPools(ctx)
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *ServiceController) restore(logger klog.Logger) (restored, conflicts int) {
	all := c.listServices()
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return serviceKey(a) < serviceKey(b)
	})
	now := time.Now()
	for _, svc := range all {
		if !c.cloud.classify.Handles(svc) && !touched(svc) {
			continue
		}
		addrs := svcstatus.Addrs(svc)
		if other, _ := conflictingWriter(svc.ManagedFields, now, standoff{}); other != "" {
			// The status shows what the other controller wrote; what ironlb held is in its
			// record. Without a record ironlb held nothing, and keeping what the status shows
			// keeps the Service's address when ironlb takes over.
			if recorded, _ := recordedAddrs(svc.Annotations); len(recorded) > 0 {
				addrs = recorded
			}
		}
		if len(addrs) == 0 {
			continue
		}
		if err := c.balancer.restore(svc, addrs); err != nil {
			conflicts++
			logger.Info("Service holds an address another Service already holds", "service", klog.KObj(svc), "err", err)
			continue
		}
		restored++
	}
	return restored, conflicts
}

// serveWaiting retries the Services that waited for an address before this start, one at a
// time in the order they started waiting and before any worker runs, so that the line
// survives a restart or a new leader: each is served, or takes its place in the line again.
func (c *ServiceController) serveWaiting(ctx context.Context) {
	all := c.listServices()
	now := time.Now()
	var ws []waiter
	for _, svc := range all {
		if since := waitingSince(ownCondition(svc), now); since.Before(now) && c.cloud.classify.Handles(svc) {
			ws = append(ws, waiter{key: serviceKey(svc), since: since})
		}
	}
	slices.SortFunc(ws, waitedLonger)
	for _, w := range ws {
		if err := c.sync(ctx, w.key); err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "Syncing Service failed; will retry", "service", w.key)
			c.queue.AddRateLimited(w.key)
		}
	}
}

func (c *ServiceController) worker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

func (c *ServiceController) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	start := time.Now()
	done := c.cloud.opts.Health.Pass(servicesLoop)
	err := c.sync(ctx, key)
	done()
	syncDuration.Observe(time.Since(start).Seconds())
	if err == nil {
		c.queue.Forget(key)
		return true
	}
	utilruntime.HandleErrorWithContext(ctx, err, "Syncing Service failed; will retry", "service", key)
	c.queue.AddRateLimited(key)
	return true
}

func (c *ServiceController) get(key string) (*v1.Service, bool, error) {
	obj, exists, err := c.current.GetByKey(key)
	if err != nil || !exists {
		return nil, false, err
	}
	return obj.(*cachedService).service(), true, nil
}

// listServices is every Service in the cache.
func (c *ServiceController) listServices() []*v1.Service {
	objs := c.services.List()
	out := make([]*v1.Service, 0, len(objs))
	for _, obj := range objs {
		out = append(out, obj.(*cachedService).service())
	}
	return out
}

func (c *ServiceController) sync(ctx context.Context, key string) error {
	svc, exists, err := c.get(key)
	if err != nil {
		return err
	}
	if !exists {
		// Gone without our finalizer (it never held an address) or after we removed it.
		return c.forget(ctx, key)
	}
	if svc.DeletionTimestamp != nil || !c.cloud.classify.Handles(svc) {
		held, err := c.holding(ctx, svc)
		if err != nil {
			return err
		}
		if !touched(svc) && len(held) == 0 {
			return nil // not ours and never was: untouched
		}
		return c.cleanup(ctx, svc)
	}
	return c.ensure(ctx, svc)
}

// ownCondition is svc's ironlb.io/IPAllocated condition, or nil.
func ownCondition(svc *v1.Service) *metav1.Condition {
	return svcstatus.Condition(svc, v1alpha1.ConditionIPAllocated)
}

// touched reports whether ironlb has written to svc.
func touched(svc *v1.Service) bool {
	_, ok := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	return ok || ownCondition(svc) != nil
}

// forget drops a Service that no longer exists.
func (c *ServiceController) forget(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	_, err = c.release(ctx, &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	return err
}

// holding returns the addresses the Service holds.
func (c *ServiceController) holding(ctx context.Context, svc *v1.Service) ([]netip.Addr, error) {
	st, exists, err := c.balancer.GetLoadBalancer(ctx, c.clusterName, svc)
	if err != nil || !exists {
		return nil, err
	}
	return svcstatus.LoadBalancerAddrs(st), nil
}

// release frees what the Service holds, updates the pool counts and wakes the Services waiting
// for an address. It returns what the Service held.
func (c *ServiceController) release(ctx context.Context, svc *v1.Service) ([]netip.Addr, error) {
	key := serviceKey(svc)
	c.setWaiting(key, false, nil, time.Time{})
	c.mu.Lock()
	delete(c.standoffs, key)
	c.mu.Unlock()
	held, err := c.holding(ctx, svc)
	if err != nil {
		return nil, err
	}
	a := &allocation{}
	if err := c.balancer.EnsureLoadBalancerDeleted(withAllocation(ctx, a), c.clusterName, svc); err != nil {
		return nil, fmt.Errorf("release addresses of %s: %w", key, err)
	}
	if len(held) > 0 {
		c.pools.markDirty()
	}
	if len(a.freed) > 0 {
		c.addressesFreed()
	}
	return held, nil
}

// cleanup releases the addresses of a Service that is being deleted or is no longer an ironlb
// LoadBalancer, and takes back everything ironlb wrote to it.
func (c *ServiceController) cleanup(ctx context.Context, svc *v1.Service) error {
	held, err := c.release(ctx, svc)
	if err != nil {
		return err
	}
	if len(held) > 0 {
		c.recorder.Eventf(svc, v1.EventTypeNormal, EventIPReleased, "Released %s", joinAddrs(held))
		klog.FromContext(ctx).Info("Released addresses", "service", klog.KObj(svc), "ips", joinAddrs(held))
	}

	// Applying nothing gives up every field ironlb owns: the ingress, the condition, the
	// annotation and the finalizer.
	_, hasAnn := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	if hasAnn || slices.Contains(svc.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer) ||
		len(svc.Status.LoadBalancer.Ingress) > 0 || ownCondition(svc) != nil {
		return c.write(ctx, svc, &v1.LoadBalancerStatus{}, true, "", nil)
	}
	return nil
}

func (c *ServiceController) removeFinalizer(ctx context.Context, svc *v1.Service) error {
	i := slices.Index(svc.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer)
	patch := fmt.Sprintf(`[{"op":"test","path":"/metadata/finalizers/%d","value":%q},{"op":"remove","path":"/metadata/finalizers/%d"}]`,
		i, v1alpha1.LoadBalancerCleanupFinalizer, i)
	updated, err := c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove finalizer of %s: %w", serviceKey(svc), err)
	}
	c.current.Mutation(newCachedService(updated))
	return nil
}

// ensure allocates (or confirms) svc's addresses and writes the outcome to the Service. While
// another controller writes status.loadBalancer, the addresses stay reserved for the Service but
// ironlb does not publish them, and says so in its condition.
func (c *ServiceController) ensure(ctx context.Context, svc *v1.Service) error {
	key := serviceKey(svc)
	logger := klog.FromContext(ctx)
	before, err := c.holding(ctx, svc)
	if err != nil {
		return err
	}
	c.mu.Lock()
	behind := linesAhead(c.line, key)
	prior := c.standoffs[key]
	c.mu.Unlock()
	now := time.Now()
	other, until := conflictingWriter(svc.ManagedFields, now, prior)
	a := &allocation{behind: behind}
	_, err = c.balancer.EnsureLoadBalancer(withAllocation(ctx, a), c.clusterName, svc, nil)
	res := a.result
	after := res.Addrs
	var aerr *ipam.Error
	unkept := res.Unkept
	if err != nil {
		aerr = allocError(err)
		allocations.WithLabelValues(string(aerr.Reason)).Inc()
		unkept = aerr.Unkept
	}
	var exhausted []ipam.Line
	if aerr != nil && aerr.Reason == ipam.ReasonPoolExhausted {
		exhausted = aerr.Exhausted
	}
	c.setWaiting(key, aerr != nil && aerr.Reason != ipam.ReasonInvalidRequest, exhausted, waitingSince(ownCondition(svc), time.Now()))
	// The record counts only for a Service that held nothing; what it says is told once, when
	// the Service gets its addresses or its condition changes.
	var bad []string
	if len(before) == 0 {
		_, bad = recordedAddrs(svc.Annotations)
	}
	taken, ignored := recordNotes(unkept, bad)
	if !slices.Equal(before, after) {
		allocations.WithLabelValues("Allocated").Inc()
		c.pools.markDirty()
		if len(before) > 0 {
			c.addressesFreed() // a Service that moved may have freed what another one waits for
		}
	}

	pool := res.Pool
	if pool == "" && len(after) > 0 {
		pool = svc.Annotations[v1alpha1.AnnotationAllocatedFrom] // the pool it came from, now gone
	}
	cond := allocatedCondition(svc, res, aerr, taken)
	prev := ownCondition(svc)
	publish := other == ""
	if !publish {
		cond = conflictCondition(prev, cond, after, other, prior.quietPeriod(other))
	}

	hasFinalizer := slices.Contains(svc.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer)
	ann, hasAnn := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	holds := len(after) > 0
	if holds {
		// The pool that announces the addresses must not go while they are served.
		if err := c.pools.protect(ctx, pool); err != nil {
			if errors.Is(err, errPoolGoing) {
				// Not published: given back, and taken from another pool on the next try.
				if _, rerr := c.release(ctx, svc); rerr != nil {
					return rerr
				}
				logger.Info("Gave back addresses of a pool being deleted", "service", klog.KObj(svc), "pool", pool, "ips", joinAddrs(after))
			}
			return err
		}
		if ann != pool {
			c.pools.markDirty() // the pool it left may lose its finalizer
		}
	}
	lbStatus := loadBalancerStatus(after, svc)
	if holds != hasFinalizer || holds != hasAnn || (holds && ann != pool) ||
		(holds && svc.Annotations[v1alpha1.AnnotationAllocatedAddresses] != joinAddrs(after)) ||
		(publish && !equality.Semantic.DeepEqual(svc.Status.LoadBalancer.Ingress, lbStatus.Ingress)) ||
		!svcstatus.SameCondition(prev, &cond) {
		if err := c.write(ctx, svc, lbStatus, publish, pool, &cond); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if next := prior.next(other, inConflict(prev)); next != prior {
		c.standoffs[key] = next
	}
	c.mu.Unlock()
	if !publish {
		// Nothing else wakes the Service when the other writer falls silent.
		c.queue.AddAfter(key, until.Sub(now))
	} else if inConflict(prev) {
		logger.Info("Took status.loadBalancer over from another controller", "service", klog.KObj(svc), "manager", prior.manager)
	}

	// Events only when something changed, so that resyncs stay quiet.
	if publish && !slices.Equal(svcstatus.Addrs(svc), after) && len(after) > 0 {
		msg := fmt.Sprintf("Allocated %s from pool %s", joinAddrs(after), pool)
		c.recorder.Event(svc, v1.EventTypeNormal, EventIPAllocated, msg)
		logger.Info("Allocated addresses", "service", klog.KObj(svc), "ips", joinAddrs(after), "pool", pool)
		if svc.Spec.LoadBalancerIP != "" {
			c.recorder.Eventf(svc, v1.EventTypeWarning, EventDeprecatedRequestIP,
				"spec.loadBalancerIP is deprecated; use the annotation %s: %q", v1alpha1.AnnotationIPs, svc.Spec.LoadBalancerIP)
		}
	}
	if len(before) == 0 && (len(after) > 0 || !svcstatus.SameCondition(prev, &cond)) {
		for _, note := range taken {
			if len(after) > 0 {
				note += "; allocated " + joinAddrs(after) + " instead"
			}
			c.recorder.Event(svc, v1.EventTypeWarning, ReasonRecordedAddressTaken, note)
			logger.Info("Recorded address not given back", "service", klog.KObj(svc), "why", note)
		}
		for _, note := range ignored {
			c.recorder.Event(svc, v1.EventTypeWarning, EventRecordIgnored, note)
		}
	}
	if !svcstatus.SameCondition(prev, &cond) {
		switch {
		case !publish:
			c.recorder.Event(svc, v1.EventTypeWarning, ReasonConflictingController, cond.Message)
			logger.Info("Another controller writes status.loadBalancer; not writing it", "service", klog.KObj(svc), "manager", other)
		case aerr != nil:
			c.recorder.Eventf(svc, v1.EventTypeWarning, EventAllocationFailed, "%s: %s", aerr.Reason, cond.Message)
			logger.Info("Allocation failed", "service", klog.KObj(svc), "reason", aerr.Reason, "message", cond.Message)
		case len(res.Warnings) > 0:
			c.recorder.Event(svc, v1.EventTypeWarning, EventAddressNotInPool, cond.Message)
		}
	}
	return nil
}

// allocatedCondition is the ironlb.io/IPAllocated condition for an allocation outcome. taken
// says which recorded addresses other Services hold (see recordNotes).
func allocatedCondition(svc *v1.Service, res ipam.Result, aerr *ipam.Error, taken []string) metav1.Condition {
	cond := metav1.Condition{Type: v1alpha1.ConditionIPAllocated, ObservedGeneration: svc.Generation}
	prev := ownCondition(svc)
	allocated := fmt.Sprintf("%s from pool %s", joinAddrs(res.Addrs), res.Pool)
	switch {
	case aerr != nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, string(aerr.Reason), aerr.Message
		if len(res.Addrs) > 0 {
			cond.Message += fmt.Sprintf("; the Service keeps %s", joinAddrs(res.Addrs))
		}
		if len(taken) > 0 {
			cond.Message += "; " + strings.Join(taken, "; ")
		}
	case len(res.Warnings) > 0:
		cond.Status, cond.Reason = metav1.ConditionTrue, EventAddressNotInPool
		cond.Message = strings.Join(res.Warnings, "; ")
	case len(taken) > 0:
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonRecordedAddressTaken
		cond.Message = allocated + "; " + strings.Join(taken, "; ")
	case prev != nil && prev.Status == metav1.ConditionTrue && prev.Reason == ReasonRecordedAddressTaken &&
		strings.HasPrefix(prev.Message, allocated+"; "):
		// The record is told only when the addresses are placed; the condition says it for as
		// long as the Service holds what it got instead.
		cond.Status, cond.Reason, cond.Message = prev.Status, prev.Reason, prev.Message
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, "Allocated"
		cond.Message = allocated
	}
	cond.LastTransitionTime = metav1.Now()
	if prev != nil && prev.Status == cond.Status {
		cond.LastTransitionTime = prev.LastTransitionTime
	}
	return cond
}

func loadBalancerApply(st *v1.LoadBalancerStatus) *corev1ac.LoadBalancerStatusApplyConfiguration {
	out := corev1ac.LoadBalancerStatus()
	for _, ing := range st.Ingress {
		ac := corev1ac.LoadBalancerIngress().WithIP(ing.IP).WithIPMode(*ing.IPMode)
		for _, p := range ing.Ports {
			ac.WithPorts(corev1ac.PortStatus().WithPort(p.Port).WithProtocol(p.Protocol))
		}
		out.WithIngress(ac)
	}
	return out
}

var applyOptions = metav1.ApplyOptions{FieldManager: v1alpha1.FieldManagerCCM, Force: true}

// write applies everything ironlb owns on a Service in one request: while it holds addresses,
// the finalizer, the ironlb.io/allocated-from and ironlb.io/allocated-addresses annotations and,
// if publish, the ingress; and its condition. Server-side apply under ironlb's own field manager means
// ironlb owns only these fields: a user's manifest need not list them, and a user's apply
// neither takes them away nor is changed by ironlb.
// Fields left out are given up, so writing no ingress and no condition takes back all of it.
// The status subresource of a Service resets only spec, so metadata lands in the same write as
// the status: the address is never published without the finalizer, and each Service costs one
// write.
func (c *ServiceController) write(ctx context.Context, svc *v1.Service, lb *v1.LoadBalancerStatus, publish bool, pool string, cond *metav1.Condition) error {
	holds := len(lb.Ingress) > 0
	ac := corev1ac.Service(svc.Name, svc.Namespace)
	st := corev1ac.ServiceStatus()
	if holds {
		ac.WithFinalizers(v1alpha1.LoadBalancerCleanupFinalizer).WithAnnotations(map[string]string{
			v1alpha1.AnnotationAllocatedFrom:      pool,
			v1alpha1.AnnotationAllocatedAddresses: joinAddrs(svcstatus.LoadBalancerAddrs(lb)),
		})
		if publish {
			st.WithLoadBalancer(loadBalancerApply(lb))
		}
	}
	if cond != nil {
		st.WithConditions(svcstatus.ConditionApply(*cond))
	}
	updated, err := c.client.CoreV1().Services(svc.Namespace).ApplyStatus(ctx, ac.WithStatus(st), applyOptions)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write status of %s: %w", serviceKey(svc), err)
	}
	c.current.Mutation(newCachedService(updated))

	switch hasFinalizer := slices.Contains(updated.Finalizers, v1alpha1.LoadBalancerCleanupFinalizer); {
	case holds && !hasFinalizer:
		return fmt.Errorf("write status of %s: the API server dropped the finalizer written with it", serviceKey(svc))
	case !holds && hasFinalizer:
		// Another field manager co-owns the finalizer (e.g. the Service's manifest lists it).
		// It must not outlive the address.
		return c.removeFinalizer(ctx, updated)
	}
	return nil
}

// setWaiting records whether the Service waits, and in which lines (exhausted). A Service that
// stays in the line keeps its place (since counts only when it joins). When a Service leaves
// a line, the heads of the lines are woken: the address it waited for may be free.
func (c *ServiceController) setWaiting(key string, waiting bool, exhausted []ipam.Line, since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if waiting {
		c.waiting[key] = true
	} else {
		delete(c.waiting, key)
	}
	waitingServices.Set(float64(len(c.waiting)))

	old, was := c.line[key]
	lines := slices.Clone(exhausted)
	slices.SortFunc(lines, compareLines)
	if len(lines) == 0 {
		delete(c.line, key)
	} else {
		if was {
			since = old.since
		}
		c.line[key] = waiter{key: key, since: since, lines: lines}
	}
	if was && !slices.Equal(old.lines, lines) {
		for _, h := range heads(c.line) {
			c.queue.Add(h)
		}
	}
}

// wakeWaiting requeues the waiting Services that match. Only Services that wait are retried,
// never every Service.
func (c *ServiceController) wakeWaiting(match func(key string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.waiting {
		if match(key) {
			c.queue.Add(key)
		}
	}
}

// addressesFreed wakes the head of every line, and the Services that wait for another reason
// (a sharing conflict or a requested address may have cleared). Waking the whole line would let
// whichever worker runs first take the address.
func (c *ServiceController) addressesFreed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.waiting {
		if _, inLine := c.line[key]; !inLine {
			c.queue.Add(key)
		}
	}
	for _, h := range heads(c.line) {
		c.queue.Add(h)
	}
}

// followPools acts on every change of the pools: waiting Services may now fit, and Services the
// change moved (an address left or came back into a pool, their pool changed) need their
// condition and ironlb.io/allocated-from rewritten.
func (c *ServiceController) followPools(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.pools.changes():
		}
		c.addressesFreed()
		for _, key := range c.pools.takeMoved() {
			c.queue.Add(key)
		}
	}
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
