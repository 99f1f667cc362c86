package bfd

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	sessionUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_session_up",
		Help: "1 when the BFD session with the peer is Up.",
	}, []string{"peer"})
	stateChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_state_changes_total",
		Help: "BFD session state changes, by peer and the state entered (AdminDown, Down, Init, Up).",
	}, []string{"peer", "state"})
	packetsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_packets_dropped_total",
		Help: "Received BFD control packets dropped, by reason (RFC 5880 §6.8.6 checks, TTL, unknown session).",
	}, []string{"reason"})
)

func init() {
	// Export every reason from the start so rate() sees the first drop.
	for _, r := range reasons {
		packetsDropped.WithLabelValues(string(r))
	}
}

// RegisterMetrics registers the BFD metrics with reg. The collectors are
// shared by every Session in the process.
func RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{sessionUp, stateChanges, packetsDropped} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register speaker BFD metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *Session) exportState(st State) {
	sessionUp.WithLabelValues(s.label).Set(boolFloat(st == Up))
}

func (s *Session) countChange(c Change) {
	stateChanges.WithLabelValues(s.label, c.State.String()).Inc()
	s.exportState(c.State)
}

func (s *Session) forgetMetrics() {
	sessionUp.DeleteLabelValues(s.label)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
