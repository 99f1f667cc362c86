package member

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a heartbeat is rejected, the values of the reason label.
const (
	reasonMalformed    = "malformed"     // not a heartbeat this version can decode
	reasonSelf         = "self"          // carries this node's own name
	reasonUnknownPeer  = "unknown_peer"  // from a node not in SetPeers
	reasonWrongAddress = "wrong_address" // from a known node, but not from its listed address
	reasonStale        = "stale"         // reordered: older than one already seen, or after that incarnation left
)

var (
	peersAlive = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "peers_alive",
		Help: "Other speakers counted alive, directly or through a relay; 0 while isolated.",
	})
	heartbeatsSent = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_sent_total",
		Help: "Heartbeat datagrams sent to peers, leaving heartbeats included.",
	})
	heartbeatsReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_received_total",
		Help: "Heartbeats accepted from peers.",
	})
	heartbeatsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_rejected_total",
		Help: "Datagrams ignored, by reason: malformed, self, unknown_peer, wrong_address, stale.",
	}, []string{"reason"})
)

func init() {
	// Export every reason from the start so rate() sees the first rejection.
	for _, r := range []string{reasonMalformed, reasonSelf, reasonUnknownPeer, reasonWrongAddress, reasonStale} {
		heartbeatsRejected.WithLabelValues(r)
	}
}

// RegisterMetrics registers the membership metrics with reg. The collectors
// are shared by every Members in the process.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{peersAlive, heartbeatsSent, heartbeatsReceived, heartbeatsRejected} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register speaker membership metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}
