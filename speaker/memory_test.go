package speaker

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/lbclass"
)

// liveHeap is the heap still reachable after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// asServed makes svc look as the API server sends it: a UID, timestamps,
// managedFields, a ClusterIP and ports, ironlb-ccm's condition next to the
// speakers'.
func asServed(svc *v1.Service, i int) *v1.Service {
	svc.UID = types.UID(fmt.Sprintf("6c1b1e0a-0000-4000-8000-%012d", i))
	svc.CreationTimestamp = metav1.Now()
	svc.Finalizers = []string{v1alpha1.LoadBalancerCleanupFinalizer}
	svc.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{}},"f:type":{}}}`)}}}
	svc.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
	svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	svc.Spec.Ports = []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: int32(30000 + i%2000)}}
	svc.Spec.Selector = map[string]string{"app": svc.Name}
	addrs := make([]string, 0, len(svc.Status.LoadBalancer.Ingress))
	for _, in := range svc.Status.LoadBalancer.Ingress {
		addrs = append(addrs, in.IP)
	}
	svc.Status.Conditions = []metav1.Condition{
		{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue, Reason: "Allocated", Message: "allocated " + addrs[0], LastTransitionTime: metav1.Now()},
		{Type: v1alpha1.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAnnounced, ObservedGeneration: svc.Generation,
			Message: addrs[0] + " by node-001 on eth0 (ARP)", LastTransitionTime: metav1.Now()},
	}
	return svc
}

// TestMemory_10000Services reports the live heap that 10,000 LoadBalancer
// Services cost a speaker of 100 nodes, held as the speaker holds them: cut
// down by the informer's transform into a cache, the plans' parts, and the
// condition writer's decisions. It measures; run it with -v to read the
// numbers (README "What a speaker costs").
func TestMemory_10000Services(t *testing.T) {
	if testing.Short() {
		t.Skip("measures memory")
	}
	slim := slimService(lbclass.Classifier{Class: "ironlb.io/ironlb", HandleClassless: true})
	// What the test's world costs without its Services: nodes, pools,
	// EndpointSlices.
	before := liveHeap()
	other, _, _ := scaleServices(100, 10000)
	worldAlone := liveHeap() - before
	runtime.KeepAlive(other)
	other = inputs{}

	base := liveHeap()
	world, served, peers := scaleServices(100, 10000)
	store := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
	for i, svc := range served {
		obj, err := slim(asServed(svc, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Add(obj); err != nil {
			t.Fatal(err)
		}
		served[i] = nil
	}
	afterCache := liveHeap()

	in := world
	for _, obj := range store.List() {
		in.services = append(in.services, obj.(*lbService))
	}
	p := newPlanner()
	l2, notAnnounced, bgp := p.plan(in, peers)
	afterPlanner := liveHeap()

	w := testWriter("node-000")
	defer w.queue.ShutDown()
	w.queueConditions(conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced}, allUp(peers, slices.Collect(maps.Keys(in.nodes))...))
	afterWriter := liveHeap()

	mib := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / (1 << 20) }
	t.Logf("10,000 Services, 100 nodes: Services' cache %.1f MiB, plans %.1f MiB, condition writer %.1f MiB, total %.1f MiB (and the nodes, pools and slices %.1f MiB)",
		mib(base+worldAlone, afterCache), mib(afterCache, afterPlanner), mib(afterPlanner, afterWriter), mib(base+worldAlone, afterWriter), mib(0, worldAlone))
	runtime.KeepAlive(store)
	runtime.KeepAlive(p)
	runtime.KeepAlive(w)
	runtime.KeepAlive(in)
}

// BenchmarkChurn_10000Services creates 10,000 Services one by one as a
// speaker sees them, a sync (plans and conditions) after every ten, and
// reports the Go runtime's memory at its peak and at the end (what it
// holds from the OS, as the RSS counts it), the collections and the CPU
// time: run it with GOGC or GOMEMLIMIT set to weigh the garbage
// collector's settings.
func BenchmarkChurn_10000Services(b *testing.B) {
	slim := slimService(lbclass.Classifier{Class: "ironlb.io/ironlb", HandleClassless: true})
	held := func() float64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.Sys-m.HeapReleased) / (1 << 20)
	}
	for b.Loop() {
		world, served, peers := scaleServices(100, 10000)
		up := allUp(peers, slices.Collect(maps.Keys(world.nodes))...)
		store := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
		p := newPlanner()
		w := testWriter("node-000")
		before := cpuTime()
		var gc runtime.MemStats
		runtime.ReadMemStats(&gc)
		cycles := gc.NumGC
		peak := 0.0
		for i, svc := range served {
			// A copy, as decoding one makes, that the transform drops.
			obj, _ := slim(asServed(svc.DeepCopy(), i))
			_ = store.Add(obj)
			if i%10 != 9 {
				continue
			}
			in := world
			in.services = nil
			for _, obj := range store.List() {
				in.services = append(in.services, obj.(*lbService))
			}
			l2, notAnnounced, bgp := p.plan(in, peers)
			w.queueConditions(conditionInputs{in: in, l2: l2, bgp: bgp, notAnnounced: notAnnounced}, up)
			peak = max(peak, held())
		}
		served = nil
		runtime.ReadMemStats(&gc)
		b.ReportMetric(peak, "peak-MiB")
		b.ReportMetric(held(), "end-MiB")
		b.ReportMetric(float64(gc.NumGC-cycles), "GCs")
		b.ReportMetric((cpuTime() - before).Seconds(), "cpu-s")
		w.queue.ShutDown()
		runtime.KeepAlive(store)
	}
}

// cpuTime is the CPU time this process used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
