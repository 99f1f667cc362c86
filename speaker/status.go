package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/svcstatus"
	"github.com/ironlb/ironlb/speaker/member"
)

// Events the speakers send.
const (
	EventAnnouncing     = "Announcing"
	EventAnnounceFailed = "AnnounceFailed"
	// EventAddressConflict: another host kept answering an address after
	// this node waited the longest for it to stop (l2.Probing), and this
	// node answers it too.
	EventAddressConflict = "AddressConflict"

	// Reasons of the Announced condition.
	ReasonAnnounced      = "Announced"
	ReasonNoEligibleNode = "NoEligibleNode"
	ReasonNotAnnounced   = "NotAnnounced"
	// ReasonAddressNotInPool: announced, but with the settings of a pool
	// that no longer holds an address, or is being deleted (ironlb-ccm's
	// condition has the same reason and says what to do).
	ReasonAddressNotInPool = "AddressNotInPool"
	// ReasonNoEstablishedSession: nodes are selected to advertise an
	// address by BGP, but none of their sessions with the peers that should
	// carry it is Established, so no router has the route.
	ReasonNoEstablishedSession = "NoEstablishedSession"
	// ReasonHeartbeatsBroken: announced, but heartbeats between some
	// speakers do not flow, so failover goes through Leases and is slower.
	ReasonHeartbeatsBroken = "HeartbeatsBroken"
	EventHeartbeatsBroken  = "HeartbeatsBroken"
)

// announcedCondition is what the Announced condition of svc should say,
// from the L2 and the BGP plans and the BGP sessions that are Established,
// or nil when neither announces any of its addresses and no pool is left
// unannounced.
// degraded, when not empty, says why failover is slow now; it is added to a
// condition with an L2 address.
func announcedCondition(svc *lbService, plan map[netip.Addr]*announcement, bplan map[netip.Addr]*advertisement, up sessions, notAnnounced, degraded string) *metav1.Condition {
	var parts []string
	ok, any, l2, unsent, outside := true, false, false, false, false
	for _, addr := range svc.addrs {
		if b := bplan[addr]; b != nil {
			any = true
			outside = outside || b.outside != ""
			switch {
			case len(b.nodes) == 0:
				ok = false
				parts = append(parts, b.message())
			case !b.carried(up):
				unsent = true
				parts = append(parts, b.unsentMessage())
			default:
				parts = append(parts, b.message())
			}
		}
		a := plan[addr]
		if a == nil {
			continue
		}
		any, l2 = true, true
		outside = outside || a.outside != ""
		if a.owner == "" {
			ok = false
			parts = append(parts, fmt.Sprintf("%s: %s", addr, a.reason)+outsideNote(a.outside))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s by %s on %s (%s)", addr, a.owner, strings.Join(a.interfaces, ","), a.protocol())+outsideNote(a.outside))
	}
	c := &metav1.Condition{Type: v1alpha1.ConditionAnnounced, ObservedGeneration: svc.Generation}
	switch {
	case notAnnounced != "":
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNotAnnounced
		parts = append([]string{notAnnounced}, parts...)
	case !any:
		return nil
	case !ok:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNoEligibleNode
	case unsent:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNoEstablishedSession
	case l2 && degraded != "":
		c.Status, c.Reason = metav1.ConditionTrue, ReasonHeartbeatsBroken
		parts = append(parts, degraded)
	case outside:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonAddressNotInPool
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonAnnounced
	}
	c.Message = strings.Join(parts, "; ")
	if len(c.Message) > 32000 {
		c.Message = c.Message[:32000]
	}
	return c
}

// writer is the one speaker that writes svc's condition: the owner of its
// first announced address, or, when none has an owner, the node the ranking
// picks among candidates. Every speaker computes the same.
func writer(svc *lbService, plan map[netip.Addr]*announcement, candidates map[string]bool) string {
	for _, addr := range svc.addrs {
		if a := plan[addr]; a != nil && a.owner != "" {
			return a.owner
		}
	}
	return rank("service/"+svc.Namespace+"/"+svc.Name, candidates)
}

// ownerInMessage finds "<address> by <node> on" in an Announced message.
var ownerInMessage = regexp.MustCompile(`(?:^|; )(\S+) by (\S+) on `)

// announcedOwners reads from svc's Announced condition which node answers
// each L2 address: the speakers' own record of who owns what, which keeps an
// address where it is across restarts of the speakers.
func announcedOwners(svc *lbService) map[netip.Addr]string {
	c := svc.announced
	if c == nil {
		return nil
	}
	out := map[netip.Addr]string{}
	for _, m := range ownerInMessage.FindAllStringSubmatch(c.Message, -1) {
		if addr, err := netip.ParseAddr(m[1]); err == nil {
			out[addr] = m[2]
		}
	}
	return out
}

// degradedNote says, for the conditions this node writes, that heartbeats
// do not flow: which nodes are cut off (answering nothing), or that they reach
// nobody and the Leases decide; "" when they flow.
func degradedNote(self string, md mode, view member.View, leases map[string]leaseState, port uint16) string {
	if md == modeFallback {
		through := 0
		for _, l := range leases {
			if l.Fresh {
				through++
			}
		}
		peersThroughLease.Set(float64(through))
		return fmt.Sprintf("heartbeats reach no speaker (UDP %d), %s included: owners come from the speakers' Leases and failover takes seconds", port, self)
	}
	peersThroughLease.Set(0)
	var cut []string
	for name, l := range leases {
		if p, heard := view.Alive[name]; l.CutOff && (!heard || p.Isolated) {
			cut = append(cut, name)
		}
	}
	if len(cut) == 0 {
		return ""
	}
	slices.Sort(cut)
	more := ""
	if len(cut) > 5 {
		more = fmt.Sprintf(" and %d more", len(cut)-5)
		cut = cut[:5]
	}
	return fmt.Sprintf("heartbeats do not flow between %s%s and the other speakers (UDP %d): those answer nothing, and the others answer their addresses",
		strings.Join(cut, ", "), more, port)
}

// conditionWriter writes the Announced condition of the Services this node
// is the writer of. It owns what it wants them to say.
type conditionWriter struct {
	node     string
	client   kubernetes.Interface
	services cache.Store
	events   *eventSink
	logger   klog.Logger
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]

	mu      sync.Mutex
	desired map[types.NamespacedName]metav1.Condition // conditions this speaker writes
	// degraded is, per Service, the HeartbeatsBroken warning already sent.
	degraded map[types.NamespacedName]string
	// decided is, per Service, what its condition was last decided from and
	// whether this node writes it: a Service whose inputs did not change is
	// not looked at again (the plans share the announcements of addresses
	// that did not change).
	decided map[types.NamespacedName]decision
	round   uint64
	// last is what the last sync that let this node write conditions
	// decided from, nil if it did not let it; sessions, the Established
	// BGP sessions last decided from. When only the sessions change, the
	// conditions are decided again from last (followSessions).
	last     *conditionInputs
	sessions sessions

	decisions int // Services decided anew by the last queueConditions (for tests)
}

// conditionInputs are the plans the conditions are decided from.
type conditionInputs struct {
	in           inputs
	l2           map[netip.Addr]*announcement
	bgp          map[netip.Addr]*advertisement
	notAnnounced map[types.NamespacedName]string
	candidates   map[string]bool
	degraded     string
}

// decision is what a Service's condition was decided from. There is one
// for every Service, so it is kept small: one list for its addresses.
type decision struct {
	version                            string // the Service's resource version
	addrs                              []decidedAddr
	notAnnounced, degraded, candidates string
	mine                               bool   // this node writes it
	round                              uint64 // the last queueConditions that saw the Service
}

// decidedAddr is what one of a Service's addresses was decided from: its
// (shared) announcement and advertisement, and whether a session that
// should carry the advertisement is Established.
type decidedAddr struct {
	l2      *announcement
	bgp     *advertisement
	carried bool
}

// still reports whether d was decided from these inputs: the same Service
// version, the same (shared) announcements of its addresses, each BGP
// advertisement still carried by some session or still by none, the same
// notes and writers. It builds nothing: it runs for every Service on every
// sync.
func (d decision) still(svc *lbService, addrs []netip.Addr, plan map[netip.Addr]*announcement, bplan map[netip.Addr]*advertisement, up sessions, notAnnounced, degraded, writers string) bool {
	if svc.ResourceVersion == "" || svc.ResourceVersion != d.version || len(addrs) != len(d.addrs) ||
		notAnnounced != d.notAnnounced || degraded != d.degraded || writers != d.candidates {
		return false
	}
	for i, addr := range addrs {
		b := bplan[addr]
		if plan[addr] != d.addrs[i].l2 || b != d.addrs[i].bgp || b != nil && b.carried(up) != d.addrs[i].carried {
			return false
		}
	}
	return true
}

func newConditionWriter(cfg Config, services cache.Store, events *eventSink) *conditionWriter {
	return &conditionWriter{
		node: cfg.Node, client: cfg.Client, services: services, events: events, logger: cfg.Logger,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
		desired:  map[types.NamespacedName]metav1.Condition{},
		degraded: map[types.NamespacedName]string{},
		decided:  map[types.NamespacedName]decision{},
	}
}

// Apply queues the conditions p gives this node to write, when its mode
// lets it speak for the others (p.conditions).
func (w *conditionWriter) Apply(_ context.Context, p *plans) error {
	if !p.conditions {
		w.mu.Lock()
		w.last = nil
		w.mu.Unlock()
		return nil
	}
	w.queueConditions(conditionInputs{in: p.in, l2: p.l2, bgp: p.bgp, notAnnounced: p.notAnnounced, candidates: p.candidates, degraded: p.degraded}, sessionsOf(p.peers))
	return nil
}

// followSessions decides the conditions again when the Established BGP
// sessions (up, from BGPPeer status) changed since the last decision, from
// the plans of the last sync: a change of BGPPeer status changes no plan,
// so it needs no sync. Only the Services whose addresses went from some
// Established session to none, or back, are looked at again (decision.still).
// It must not run at the same time as Apply: the speaker calls both from its
// one sync loop.
func (w *conditionWriter) followSessions(up sessions) {
	w.mu.Lock()
	last, same := w.last, w.sessions.equal(up)
	w.mu.Unlock()
	if last != nil && !same {
		w.queueConditions(*last, up)
	}
}

// Stop ends the workers.
func (w *conditionWriter) Stop(context.Context) { w.queue.ShutDown() }

// run writes conditions with n workers until Stop.
func (w *conditionWriter) run(ctx context.Context, n int) {
	for range n {
		go w.worker(ctx)
	}
}

// queueConditions records the conditions this speaker writes, from the
// plans from and the Established sessions up, and queues those that differ
// from what the Service shows.
func (w *conditionWriter) queueConditions(from conditionInputs, up sessions) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last, w.sessions = &from, up
	in, plan, bplan, notAnnounced, candidates, degraded := from.in, from.l2, from.bgp, from.notAnnounced, from.candidates, from.degraded
	w.round++
	w.decisions = 0
	writers := strings.Join(slices.Sorted(maps.Keys(candidates)), ",")
	for _, svc := range in.services {
		key := svc.key()
		addrs := svc.addrs
		if prev, ok := w.decided[key]; ok && prev.still(svc, addrs, plan, bplan, up, notAnnounced[key], degraded, writers) {
			prev.round = w.round
			w.decided[key] = prev
			continue
		}
		w.decisions++
		d := decision{version: svc.ResourceVersion, notAnnounced: notAnnounced[key], degraded: degraded, candidates: writers, round: w.round,
			addrs: make([]decidedAddr, len(addrs))}
		for i, addr := range addrs {
			b := bplan[addr]
			d.addrs[i] = decidedAddr{l2: plan[addr], bgp: b, carried: b != nil && b.carried(up)}
		}
		c := announcedCondition(svc, plan, bplan, up, notAnnounced[key], degraded)
		d.mine = c != nil && writer(svc, plan, candidates) == w.node
		w.decided[key] = d
		if !d.mine {
			continue
		}
		w.desired[key] = *c
		if c.Reason == ReasonHeartbeatsBroken && w.degraded[key] != degraded {
			w.events.warning(key, EventHeartbeatsBroken, degraded)
		}
		if c.Reason == ReasonHeartbeatsBroken {
			w.degraded[key] = degraded
		} else {
			delete(w.degraded, key)
		}
		if !svcstatus.SameCondition(svc.announced, c) {
			w.queue.Add(key)
		}
	}
	for key, d := range w.decided {
		if d.round != w.round {
			delete(w.decided, key)
		}
	}
	for key := range w.desired {
		if !w.decided[key].mine {
			delete(w.desired, key)
			delete(w.degraded, key)
		}
	}
}

func (w *conditionWriter) worker(ctx context.Context) {
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		if err := w.write(ctx, key); err != nil {
			w.logger.Error(err, "Cannot write the Announced condition; retrying", "service", key)
			w.queue.AddRateLimited(key)
		} else {
			w.queue.Forget(key)
		}
		w.queue.Done(key)
	}
}

// writeCondition applies this speaker's condition with server-side apply:
// only the Announced condition, under the speakers' field manager, so
// ironlb-ccm's condition and everything else stay as they are.
func (w *conditionWriter) write(ctx context.Context, key types.NamespacedName) error {
	w.mu.Lock()
	c, ok := w.desired[key]
	w.mu.Unlock()
	if !ok {
		return nil
	}
	obj, exists, err := w.services.GetByKey(key.String())
	if err != nil || !exists {
		return err
	}
	prev := obj.(*lbService).announced
	if svcstatus.SameCondition(prev, &c) {
		return nil
	}
	since := metav1.NewTime(time.Now())
	if prev != nil && prev.Status == c.Status {
		since = prev.LastTransitionTime
	}
	c.LastTransitionTime = since
	ac := corev1ac.Service(key.Name, key.Namespace).WithStatus(corev1ac.ServiceStatus().WithConditions(svcstatus.ConditionApply(c)))
	_, err = w.client.CoreV1().Services(key.Namespace).ApplyStatus(ctx, ac, metav1.ApplyOptions{FieldManager: v1alpha1.FieldManagerSpeaker, Force: true})
	if err != nil {
		return fmt.Errorf("apply the %s condition of %s: %w", c.Type, key, err)
	}
	return nil
}

// eventSink sends events about Services, from this node.
type eventSink struct {
	recorder record.EventRecorder
}

// eventCacheSize bounds each of the event correlator's caches (client-go
// keeps 4,096 entries by default, a few MiB with thousands of Services): it
// aggregates repeats of one event and rate-limits one object's events, and a
// speaker's events come in bursts of one per Service, not repeats.
const eventCacheSize = 512

func newEventSink(client kubernetes.Interface, node string) *eventSink {
	b := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: eventCacheSize}))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &eventSink{recorder: b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "ironlb-speaker", Host: node})}
}

func (e *eventSink) normal(svc types.NamespacedName, reason, msg string) {
	e.recorder.Event(ref(svc), v1.EventTypeNormal, reason, msg)
}

func (e *eventSink) warning(svc types.NamespacedName, reason, msg string) {
	e.recorder.Event(ref(svc), v1.EventTypeWarning, reason, msg)
}

func ref(svc types.NamespacedName) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: svc.Namespace, Name: svc.Name}
}
