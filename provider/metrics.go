package provider

import (
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	allocations = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "ccm", Name: "allocations_total",
		Help: "Allocation outcomes: Allocated, or the reason it failed.",
	}, []string{"result"})
	syncDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace: "ironlb", Subsystem: "ccm", Name: "service_sync_duration_seconds",
		Help:    "Time to sync one Service, API writes included.",
		Buckets: metrics.ExponentialBuckets(0.0005, 2, 14),
	})
	waitingServices = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "ironlb", Subsystem: "ccm", Name: "waiting_services",
		Help: "Services waiting for an address or a pool.",
	})
	poolAddresses = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "ironlb", Name: "pool_addresses",
		Help: "Addresses of a pool by family and state (capacity, allocated).",
	}, []string{"pool", "family", "state"})
)

func init() {
	legacyregistry.MustRegister(allocations, syncDuration, waitingServices, poolAddresses)
}
