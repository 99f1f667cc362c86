package integration

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/informers"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"

	"github.com/ironlb/ironlb/provider"
)

// TestStockServiceControllerGetsAddressesThroughIronlbsLoadBalancer runs the stock service
// controller of k8s.io/cloud-provider, built as a cloud-controller-manager run with
// --controllers=service builds it, with ironlb's cloud: classless Services get their addresses
// from IPPools through ironlb's cloudprovider.LoadBalancer alone, and deleting a Service releases
// its address.
//
// The stock controller does only that. What ironlb's own service controller adds, and this test
// therefore does not see: Services of ironlb's loadBalancerClass (the stock controller skips every
// Service that sets a class); the ironlb.io/IPAllocated condition with its reasons and ironlb's
// events; fair waiting lines, in which freed addresses go to the Services that waited longest;
// restoring every held address, oldest Service first, before any allocation after a restart;
// the ironlb.io/allocated-from and ironlb.io/allocated-addresses record; standing back while
// another controller writes status.loadBalancer; holding an IPPool while its addresses are
// served; and namespace labels for serviceAllocation.namespaceSelector.
func TestStockServiceControllerGetsAddressesThroughIronlbsLoadBalancer(t *testing.T) {
	e := newEnv(t)
	e.pool("one", spec("172.31.110.7/32"))

	cloud := provider.New(provider.Options{HandleClassless: true})
	pools := provider.NewPoolController(cloud, e.dyn, time.Hour)
	go pools.Run(e.ctx)
	// The stock controller restores nothing at start, so the pools' status may be written now.
	pools.HoldersKnown()

	factory := informers.NewSharedInformerFactory(e.client, time.Hour)
	sc, err := servicecontroller.New(cloud, e.client, factory.Core().V1().Services(), factory.Core().V1().Nodes(), "kubernetes", utilfeature.DefaultFeatureGate)
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(e.ctx.Done())
	e.eventually("the pools to be loaded", func() (bool, string) { return pools.HasSynced(), "" })
	go sc.Run(e.ctx, 2, controllersmetrics.NewControllerManagerMetrics("ironlb-integration"))

	e.service("first")
	e.waitIPs("first", "172.31.110.7")
	e.eventually("pool one to count the held address", func() (bool, string) {
		st := e.getPool("one").Status
		return st.IPv4 != nil && st.IPv4.Allocated == "1", fmt.Sprintf("status %+v", st.IPv4)
	})

	// The pool's only address is held: the second Service waits.
	e.service("second")
	time.Sleep(2 * time.Second)
	if got := ingressIPs(e.get("second")); len(got) != 0 {
		t.Fatalf("second got %v while first holds the pool's only address", got)
	}

	e.delete("first")
	e.eventually("first to be gone", func() (bool, string) {
		_, err := e.client.CoreV1().Services("default").Get(e.ctx, "first", metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	// The stock controller retries a refused Service with backoff, not when an address is freed.
	e.within(2*time.Minute, "second to get the released address", func() (bool, string) {
		got := ingressIPs(e.get("second"))
		return len(got) == 1 && got[0] == "172.31.110.7", fmt.Sprintf("ingress %v", got)
	})
}
