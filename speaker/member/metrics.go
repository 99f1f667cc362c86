package member

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a datagram is dropped, the values of the reason label.
const (
	reasonMalformed    = "malformed"     // not a heartbeat of this version, or does not parse
	reasonUnknownKey   = "unknown_key"   // unsigned, or signed under no accepted key
	reasonBadMAC       = "bad_mac"       // the MAC does not match: forged or altered
	reasonReplay       = "replay"        // not newer than a datagram already accepted from that member
	reasonClock        = "clock"         // sent further from this node's clock than MaxClockSkew
	reasonSelf         = "self"          // carries this node's own name
	reasonUnknownPeer  = "unknown_peer"  // from a node not in the member list
	reasonWrongAddress = "wrong_address" // from a member, but not from its listed address
)

var reasons = []string{reasonMalformed, reasonUnknownKey, reasonBadMAC, reasonReplay, reasonClock, reasonSelf, reasonUnknownPeer, reasonWrongAddress}

// reasonOf maps an error of open to its reason.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, errUnknownKey):
		return reasonUnknownKey
	case errors.Is(err, errBadMAC):
		return reasonBadMAC
	default:
		return reasonMalformed
	}
}

var (
	peersAlive = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "peers_alive",
		Help: "Other speakers counted alive, heard directly or through other members' heartbeats.",
	})
	members = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "members",
		Help: "Speakers in the heartbeat membership (those that may announce for an L2 pool), this one included; 0 when this node takes no part.",
	})
	isolated = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_isolated",
		Help: "1 while this speaker hears none of the speakers that send heartbeats to it.",
	})
	heartbeatsSent = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_sent_total",
		Help: "Heartbeat datagrams sent to peers, leaving heartbeats included.",
	})
	heartbeatsReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_received_total",
		Help: "Heartbeats accepted from peers.",
	})
	heartbeatsOtherList = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_other_member_list_total",
		Help: "Accepted heartbeats whose sender indexes another member list (its vector is not used), as happens briefly while nodes join or leave.",
	})
	lapses = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeat_lapses_total",
		Help: "Times this speaker went silent for longer than the others wait (its process paused or starved), and so answered nothing until heard again.",
	})
	cuts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeat_cuts_total",
		Help: "Times this speaker, connected, found itself cut off (it heard none of its senders, or its own beats stopped reaching them), and so answered nothing for a timeout. A count that rises at rest means lost datagrams or a starved process.",
	})
	heartbeatsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_rejected_total",
		Help: "Datagrams dropped, by reason: malformed, unknown_key, bad_mac, replay, clock, self, unknown_peer, wrong_address.",
	}, []string{"reason"})
)

func init() {
	// Export every reason from the start so rate() sees the first rejection.
	for _, r := range reasons {
		heartbeatsRejected.WithLabelValues(r)
	}
}

// RegisterMetrics registers the membership metrics with reg. The collectors
// are shared by every Members in the process.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{peersAlive, members, isolated, heartbeatsSent, heartbeatsReceived, heartbeatsOtherList, heartbeatsRejected, lapses, cuts} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register speaker membership metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (m *Members) reject(reason string, from netip.AddrPort, node string, err error) {
	heartbeatsRejected.WithLabelValues(reason).Inc()
	m.log.V(4).Info("Dropped heartbeat", "node", m.node, "from", from, "sender", node, "reason", reason, "err", err)
}
