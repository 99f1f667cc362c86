package bfd

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// metrics are the collectors of one Mux's sessions and listeners.
type metrics struct {
	sessionUp      *prometheus.GaugeVec
	stateChanges   *prometheus.CounterVec
	packetsDropped *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		sessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_session_up",
			Help: "1 when the BFD session with the peer is Up.",
		}, []string{"peer"}),
		stateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_state_changes_total",
			Help: "BFD session state changes, by peer and the state entered (AdminDown, Down, Init, Up).",
		}, []string{"peer", "state"}),
		packetsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb", Subsystem: "speaker", Name: "bfd_packets_dropped_total",
			Help: "Received BFD control packets dropped, by reason (RFC 5880 §6.8.6 checks, TTL, unknown session).",
		}, []string{"reason"}),
	}
	// Export every reason from the start so rate() sees the first drop.
	for _, r := range reasons {
		m.packetsDropped.WithLabelValues(string(r))
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sessionUp, m.stateChanges, m.packetsDropped}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register speaker BFD metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (m *metrics) dropped(err error, src netip.Addr, log klog.Logger) {
	reason := ReasonNoSession
	var de *DropError
	if errors.As(err, &de) {
		reason = de.Reason
	}
	m.packetsDropped.WithLabelValues(string(reason)).Inc()
	log.V(4).Info("Dropped BFD packet", "from", src, "reason", reason, "err", err)
}

// exportSession makes every state's counter of s visible before its first
// change, so rate() sees the first change too.
func (s *Session) exportSession() {
	for _, st := range []State{AdminDown, Down, Init, Up} {
		s.mux.metrics.stateChanges.WithLabelValues(s.label, st.String())
	}
	s.exportState(Down)
}

func (s *Session) exportState(st State) {
	s.mux.metrics.sessionUp.WithLabelValues(s.label).Set(boolFloat(st == Up))
}

func (s *Session) countChange(c Change) {
	s.mux.metrics.stateChanges.WithLabelValues(s.label, c.State.String()).Inc()
	s.exportState(c.State)
}

func (s *Session) forgetMetrics() {
	s.mux.metrics.sessionUp.DeleteLabelValues(s.label)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
