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

var (
	bgpSessionUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bgp_session_up",
		Help: "1 when the BGP session with the peer is Established.",
	}, []string{"peer"})
	bgpPrefixes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bgp_prefixes_advertised",
		Help: "Prefixes advertised to the peer.",
	}, []string{"peer"})
	bgpUpdates = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bgp_updates_sent",
		Help: "UPDATE messages sent on the current session with the peer.",
	}, []string{"peer"})
)

// RegisterMetrics registers every speaker metric with reg: addresses owned,
// ARP/NDP requests, replies and gratuitous announcements, peers alive and
// heartbeats.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{addressesOwned, bgpSessionUp, bgpPrefixes, bgpUpdates} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if err := l2.RegisterMetrics(reg); err != nil {
		return err
	}
	return member.RegisterMetrics(reg)
}
