package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/speaker/l2"
)

// l2Announcer answers ARP and NDP for the addresses this node owns, as the
// L2 plan says. It owns the responders and what they answer.
type l2Announcer struct {
	node   string
	logger klog.Logger
	events *eventSink
	// fence says, at the instant of a reply, what mayReply needs but
	// viaLeases: whether this node's process kept running, whether its Lease
	// is renewed as the fallback needs, and whether the peers surely count
	// it alive.
	fence func() (answerable, leaseOK, heard bool)
	// viaLeases: the fallback decides who owns what, not the heartbeats,
	// so a reply does not wait for the heartbeats to show this node heard.
	viaLeases atomic.Bool
	// probing: how the responders look at an address before answering it.
	probing l2.Probing

	mu         sync.Mutex
	responders map[string]*running                   // by interface
	owned      map[netip.Addr]bool                   // addresses answered here, for events
	services   map[netip.Addr][]types.NamespacedName // of each owned address, for conflict events
	failed     map[string]bool                       // interfaces that could not be opened
	warned     map[string]bool                       // AnnounceFailed events already sent
}

type running struct {
	r      *l2.Responder
	cancel context.CancelFunc
	done   chan struct{}
}

func newL2Announcer(node string, logger klog.Logger, events *eventSink, probing l2.Probing, fence func() (answerable, leaseOK, heard bool)) *l2Announcer {
	return &l2Announcer{node: node, logger: logger, events: events, fence: fence, probing: probing,
		responders: map[string]*running{}, owned: map[netip.Addr]bool{}, services: map[netip.Addr][]types.NamespacedName{},
		failed: map[string]bool{}, warned: map[string]bool{}}
}

// Apply answers exactly p.answer, and warns about nodes that lack a pool's
// interfaces.
func (l *l2Announcer) Apply(ctx context.Context, p *plans) error {
	l.viaLeases.Store(p.viaLeases)
	l.answer(ctx, p.answer, p.l2)
	l.warnMissing(p.l2)
	return nil
}

// Stop silences every responder at once and closes them.
func (l *l2Announcer) Stop(context.Context) { l.stopAnswering() }

// answering is what this node answers for now.
func (l *l2Announcer) answering() map[netip.Addr]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[netip.Addr]bool, len(l.owned))
	for a := range l.owned {
		out[a] = true
	}
	return out
}

// open is the responders' gate (mayReply). The plan said what to answer
// when it was made; the gate holds between plans, when the heartbeats stop,
// the process was paused or the Lease cannot be renewed.
func (l *l2Announcer) open() bool {
	answerable, leaseOK, heard := l.fence()
	return mayReply(answerable, leaseOK, heard, l.viaLeases.Load())
}

// usable reports whether the interface could be opened the last time it was tried.
func (l *l2Announcer) usable(ifc string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.failed[ifc]
}

// answer makes the responders answer exactly want, opening them as needed.
func (l *l2Announcer) answer(ctx context.Context, want map[string][]netip.Addr, plan map[netip.Addr]*announcement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ifc := range want {
		if _, ok := l.responders[ifc]; ok {
			continue
		}
		r, err := l2.New(ifc, l.logger.WithName("l2"), l2.WithGate(l.open), l2.WithProbing(l.probing), l2.WithConflict(l.conflict))
		if err != nil {
			l.logger.Error(err, "Cannot answer on interface; its addresses go to another node", "interface", ifc)
			l.failed[ifc] = true
			delete(want, ifc)
			continue
		}
		delete(l.failed, ifc)
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		run := &running{r: r, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(run.done)
			if err := r.Run(rctx); err != nil {
				l.logger.Error(err, "Responder stopped", "interface", ifc)
			}
		}()
		l.responders[ifc] = run
	}
	owned := map[netip.Addr]bool{}
	clear(l.services)
	for ifc, run := range l.responders {
		addrs := want[ifc]
		slices.SortFunc(addrs, netip.Addr.Compare)
		run.r.SetAddresses(addrs)
		for _, a := range addrs {
			owned[a] = true
			if ann := plan[a]; ann != nil {
				l.services[a] = ann.services
			}
		}
	}
	var v4, v6 float64
	for a := range owned {
		if a.Is4() {
			v4++
		} else {
			v6++
		}
		if !l.owned[a] {
			if ann := plan[a]; ann != nil {
				for _, svc := range ann.services {
					l.events.normal(svc, EventAnnouncing, fmt.Sprintf("Announcing %s from %s on %s (%s)",
						a, l.node, strings.Join(ann.interfaces, ","), ann.protocol()))
				}
				l.logger.Info("Announcing", "address", a, "interfaces", ann.interfaces, "protocol", ann.protocol(), "services", ann.services)
			}
		}
	}
	for a := range l.owned {
		if !owned[a] {
			l.logger.Info("Stopped announcing", "address", a)
		}
	}
	l.owned = owned
	addressesOwned.WithLabelValues("arp").Set(v4)
	addressesOwned.WithLabelValues("ndp").Set(v6)
}

// conflict is told by a responder that it answers addr although the host at
// mac still answered it after the longest wait: a host on the LAN has the
// address configured, or forges answers. The Services that have it say so.
func (l *l2Announcer) conflict(addr netip.Addr, mac net.HardwareAddr) {
	l.mu.Lock()
	svcs := slices.Clone(l.services[addr])
	l.mu.Unlock()
	for _, svc := range svcs {
		l.events.warning(svc, EventAddressConflict, fmt.Sprintf("Another host (MAC %s) kept answering %s after %s waited %s for it to stop; %s answers it too. Find that host: an address of the pool is in use, or someone forges answers",
			mac, addr, l.node, l.probing.MaxWait, l.node))
	}
}

// warnMissing sends AnnounceFailed once per Service and problem when this
// node is selected by a pool but lacks its interfaces.
func (l *l2Announcer) warnMissing(plan map[netip.Addr]*announcement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range plan {
		msg, ok := a.missing[l.node]
		if !ok {
			continue
		}
		for _, svc := range a.services {
			key := svc.String() + "|" + msg
			if l.warned[key] {
				continue
			}
			l.warned[key] = true
			l.events.warning(svc, EventAnnounceFailed, fmt.Sprintf("Cannot announce %s from IPPool %s on %s", a.addr, a.pool, msg))
		}
	}
}

// stopAnswering silences every responder at once and closes them.
func (l *l2Announcer) stopAnswering() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, run := range l.responders {
		run.r.SetAddresses(nil)
	}
	for ifc, run := range l.responders {
		run.cancel()
		select {
		case <-run.done:
		case <-time.After(5 * time.Second):
			l.logger.Info("Responder did not stop in time", "interface", ifc)
		}
	}
	l.responders = map[string]*running{}
}
