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

// membershipMode is 1 for the mode this speaker is in (owner.go): heartbeats,
// settling, cut-off or fallback.
var membershipModeGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: "ironlb", Subsystem: "speaker", Name: "membership_mode",
	Help: "1 for the mode this speaker is in: heartbeats, settling, cut-off (answers nothing) or fallback (owners from Leases).",
}, []string{"mode"})

// peersThroughLease counts the live speakers this one knows of only through
// their Leases: the heartbeats between them are broken.
var peersThroughLease = prometheus.NewGauge(prometheus.GaugeOpts{
	Namespace: "ironlb", Subsystem: "speaker", Name: "peers_through_lease",
	Help: "In the fallback (heartbeats reach no speaker): the other speakers counted alive through their fresh Leases; 0 otherwise.",
})

func setMode(m mode) {
	for _, each := range []mode{modeHeartbeats, modeJoining, modeSettling, modeCutOff, modeFallback} {
		membershipModeGauge.WithLabelValues(string(each)).Set(boolFloat(each == m))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// syncs counts the recomputations of the plans; syncTriggers, the changes
// the caches saw, by kind and by whether they led to a sync ("queued"),
// could change no plan ("ignored"), or had only the condition writer look
// again ("conditions": a BGPPeer's status). A speaker's work should follow
// the changes to what it announces, not to the cluster.
var (
	syncs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "syncs_total",
		Help: "Recomputations of the plans (every address's owner, BGP advertisements, conditions).",
	})
	// partsComputed counts the Services whose part the planner computed
	// again (planner.go): after one Service changed, one.
	partsComputed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "service_plans_computed_total",
		Help: "Services whose addresses' plan a sync computed again; the others kept theirs. One Service changed: one; a node, pool, peer or live speaker changed: every Service.",
	})
	syncTriggers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "cache_changes_total",
		Help: "Changes seen in the speaker's caches, by kind and result: queued (a sync follows), ignored (no plan reads what changed) or conditions (a BGPPeer's status: only the Announced conditions are looked at again).",
	}, []string{"kind", "result"})
)

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
// syncs and the changes that caused them, ARP/NDP requests, replies and
// gratuitous announcements, peers alive and heartbeats.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{addressesOwned, syncs, partsComputed, syncTriggers, membershipModeGauge, peersThroughLease, bgpSessionUp, bgpPrefixes, bgpUpdates} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if err := l2.RegisterMetrics(reg); err != nil {
		return err
	}
	return member.RegisterMetrics(reg)
}
