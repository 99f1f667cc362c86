package l2

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Protocol label values.
const (
	protocolARP = "arp"
	protocolNDP = "ndp"
)

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_requests_total",
		Help: "ARP requests and IPv6 neighbor solicitations received for an address this node answers for.",
	}, []string{"protocol", "interface"})
	repliesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_replies_total",
		Help: "ARP replies and solicited neighbor advertisements sent.",
	}, []string{"protocol", "interface"})
	gratuitousTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_gratuitous_total",
		Help: "Gratuitous ARP requests and unsolicited neighbor advertisements sent to announce an address.",
	}, []string{"protocol", "interface"})
	waitedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_takeovers_waited_total",
		Help: "Addresses this node was to answer that another host still answered when it looked (ARP probe, DAD solicitation): it waited for that host to stop.",
	}, []string{"protocol", "interface"})
	droppedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_dropped_total",
		Help: "ARP and neighbor discovery frames the kernel dropped because the speaker's socket queue was full: requests among them went unanswered.",
	}, []string{"protocol", "interface"})
	conflictsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "l2_conflicts_total",
		Help: "Addresses this node answers although another host still answered them after the longest wait.",
	}, []string{"protocol", "interface"})
)

// RegisterMetrics adds the package's counters to reg:
// ironlb_speaker_l2_requests_total, ironlb_speaker_l2_replies_total,
// ironlb_speaker_l2_gratuitous_total, ironlb_speaker_l2_takeovers_waited_total
// ironlb_speaker_l2_conflicts_total and ironlb_speaker_l2_dropped_total, each labelled by protocol ("arp" or
// "ndp") and interface. Registering them again with the same registry is not
// an error, so every component that runs a Responder may call it.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{requestsTotal, repliesTotal, gratuitousTotal, waitedTotal, conflictsTotal, droppedTotal} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) && already.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}

// counters are one protocol's counters on one interface, resolved once so
// that the packet path does no label lookups.
type counters struct {
	requests, replies, gratuitous, waited, conflicts, dropped prometheus.Counter
}

func newCounters(protocol, iface string) counters {
	return counters{
		requests:   requestsTotal.WithLabelValues(protocol, iface),
		replies:    repliesTotal.WithLabelValues(protocol, iface),
		gratuitous: gratuitousTotal.WithLabelValues(protocol, iface),
		waited:     waitedTotal.WithLabelValues(protocol, iface),
		conflicts:  conflictsTotal.WithLabelValues(protocol, iface),
		dropped:    droppedTotal.WithLabelValues(protocol, iface),
	}
}
