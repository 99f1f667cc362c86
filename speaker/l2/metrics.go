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
)

// RegisterMetrics adds the package's counters to reg:
// ironlb_speaker_l2_requests_total, ironlb_speaker_l2_replies_total and
// ironlb_speaker_l2_gratuitous_total, each labelled by protocol ("arp" or
// "ndp") and interface. Registering them again with the same registry is not
// an error, so every component that runs a Responder may call it.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{requestsTotal, repliesTotal, gratuitousTotal} {
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
	requests, replies, gratuitous prometheus.Counter
}

func newCounters(protocol, iface string) counters {
	return counters{
		requests:   requestsTotal.WithLabelValues(protocol, iface),
		replies:    repliesTotal.WithLabelValues(protocol, iface),
		gratuitous: gratuitousTotal.WithLabelValues(protocol, iface),
	}
}
