package speaker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironlb/ironlb/speaker/l2"
	"github.com/ironlb/ironlb/speaker/member"
)

var addressesOwned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: "ironlb", Subsystem: "speaker", Name: "addresses_owned",
	Help: "Addresses this node answers for, by protocol (arp, ndp).",
}, []string{"protocol"})

// RegisterMetrics registers every speaker metric with reg: addresses owned,
// ARP/NDP requests, replies and gratuitous announcements, peers alive and
// heartbeats.
func RegisterMetrics(reg prometheus.Registerer) error {
	if err := reg.Register(addressesOwned); err != nil {
		return err
	}
	if err := l2.RegisterMetrics(reg); err != nil {
		return err
	}
	return member.RegisterMetrics(reg)
}
