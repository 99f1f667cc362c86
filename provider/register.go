package provider

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
)

// ControllerInitFuncConstructors are the controllers ironlb-ccm runs: the stock cloud-node and
// cloud-node-lifecycle controllers (they initialize nodes through InstancesV2), and ironlb's own
// service controller in place of the stock one.
func ControllerInitFuncConstructors() map[string]app.ControllerInitFuncConstructor {
	out := map[string]app.ControllerInitFuncConstructor{}
	for name, c := range app.DefaultInitFuncConstructors {
		out[name] = c
	}
	// The stock controller's name, so that --controllers keeps its usual meaning.
	out[names.ServiceLBController] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "ironlb-service-controller"},
		Constructor: startServiceController,
	}
	return out
}

// eventCacheSize bounds each of the event correlator's caches (client-go keeps 4,096 entries by
// default, several MiB with thousands of Services): they aggregate repeats of one event and
// rate-limit one object's events, and ironlb-ccm's events come one per Service as it is served,
// not as repeats.
const eventCacheSize = 512

func startServiceController(initCtx app.ControllerInitContext, cfg *cloudcontrollerconfig.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
	return func(ctx context.Context, _ genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
		c, ok := cloud.(*Cloud)
		if !ok {
			return nil, false, fmt.Errorf("the ironlb service controller needs the %q cloud provider, not %q", ProviderName, cloud.ProviderName())
		}
		restCfg, err := cfg.ClientBuilder.Config(initCtx.ClientName)
		if err != nil {
			return nil, false, err
		}
		client, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return nil, false, err
		}
		dyn, err := dynamic.NewForConfig(restCfg)
		if err != nil {
			return nil, false, err
		}
		// Events get a client of their own, so that they never hold up status writes.
		eventClient, err := cfg.ClientBuilder.Client(initCtx.ClientName + "-events")
		if err != nil {
			return nil, false, err
		}
		broadcaster := record.NewBroadcaster(record.WithContext(ctx),
			record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: eventCacheSize}))
		broadcaster.StartStructuredLogging(3)
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
		recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "ironlb-ccm"})

		informers := cfg.SharedInformers.Core().V1()
		pools := NewPoolController(c, dyn, cfg.ComponentConfig.Generic.MinResyncPeriod.Duration)
		sc := NewServiceController(c, cfg.ComponentConfig.KubeCloudShared.ClusterName, client, informers.Services(), informers.Namespaces(), pools, recorder)
		go pools.Run(ctx)
		go func() {
			sc.Run(ctx, int(cfg.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
			broadcaster.Shutdown()
		}()
		return nil, true, nil
	}
}
