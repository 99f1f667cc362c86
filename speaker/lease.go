package speaker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	utilptr "k8s.io/utils/ptr"
)

// Every speaker has one Lease, named after its node, in its own namespace.
// It carries the node's interface info (written when that changes), and it
// is renewed only while heartbeats do not flow somewhere (the fallback): at
// rest no speaker writes anything.
const (
	leasePrefix = "ironlb-speaker-"
	// LabelLeaseComponent marks the speakers' Leases, which the speakers watch.
	LabelLeaseComponent = "app.kubernetes.io/component"
	leaseComponent      = "speaker-lease"

	annotationInterfaces = "ironlb.io/interfaces"
	annotationHeartbeats = "ironlb.io/heartbeats"

	// Values of annotationHeartbeats.
	heartbeatsOK       = "ok"       // not renewing
	heartbeatsCutOff   = "cut-off"  // renewing: this node is cut off from the heartbeats
	heartbeatsFallback = "fallback" // renewing: cut off, and answering what the Leases give it
	heartbeatsStandby  = "standby"  // renewing: another node is cut off and needs to see this one
)

// renewing reports whether a Lease that says heartbeats is being renewed.
func renewing(heartbeats string) bool {
	return heartbeats == heartbeatsCutOff || heartbeats == heartbeatsFallback || heartbeats == heartbeatsStandby
}

// LeaseName is the name of node's speaker Lease.
func LeaseName(node string) string { return leasePrefix + node }

// leases keeps this node's Lease and reads the others'. It owns all Lease
// state of the speaker.
type leases struct {
	client    kubernetes.Interface
	namespace string
	node      string
	duration  time.Duration
	informer  cache.SharedIndexInformer

	mu       sync.Mutex
	observed map[string]observedLease // by node
	written  *coordinationv1.Lease    // this node's, as last written
	renewed  time.Time                // when this node last renewed its Lease

	// What this node's Lease should say (set); run writes it, so that
	// no decision waits for the API server: a node whose link is down
	// must stop answering at once, not after a write times out.
	wantInfo       map[string]string
	wantHeartbeats string
	kick           chan struct{}
	// renewFrom is when this node last began to renew its Lease (set
	// asked for it after not renewing): see fenced.
	renewFrom time.Time
	// fence is fenceAt of the above, in Unix nanoseconds (0: never), read
	// without the lock by fenced before every reply.
	fence atomic.Int64
}

// observedLease is a Lease as this node saw it change.
type observedLease struct {
	renew      time.Time // spec.renewTime
	seen       time.Time // when this node saw that renewTime first (its own clock)
	heartbeats string
	info       map[string]string
}

func newLeases(client kubernetes.Interface, namespace, node string, duration time.Duration) *leases {
	l := &leases{client: client, namespace: namespace, node: node, duration: duration, observed: map[string]observedLease{},
		wantHeartbeats: heartbeatsOK, kick: make(chan struct{}, 1)}
	l.informer = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelLeaseComponent + "=" + leaseComponent }),
	).Coordination().V1().Leases().Informer()
	return l
}

// observe records a Lease the informer delivered. A renewal counts from
// when this node sees it, so nodes' clocks need not agree; a Lease seen for
// the first time counts as renewed when it says, if that is recent.
func (l *leases) observe(obj any) {
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok || !strings.HasPrefix(lease.Name, leasePrefix) || lease.Spec.HolderIdentity == nil {
		return
	}
	node := *lease.Spec.HolderIdentity
	now := time.Now()
	var renew time.Time
	if lease.Spec.RenewTime != nil {
		renew = lease.Spec.RenewTime.Time
	}
	var info map[string]string
	_ = json.Unmarshal([]byte(lease.Annotations[annotationInterfaces]), &info)
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, known := l.observed[node]
	o := observedLease{renew: renew, seen: prev.seen, heartbeats: lease.Annotations[annotationHeartbeats], info: info}
	switch {
	case renew.IsZero():
		o.seen = time.Time{}
	case !known && now.Sub(renew) < l.duration:
		o.seen = renew
	case known && !renew.Equal(prev.renew):
		o.seen = now
	}
	l.observed[node] = o
}

func (l *leases) forget(obj any) {
	if lease, ok := unwrap(obj).(*coordinationv1.Lease); ok && lease.Spec.HolderIdentity != nil {
		l.mu.Lock()
		delete(l.observed, *lease.Spec.HolderIdentity)
		l.mu.Unlock()
	}
}

// states are the other nodes' Leases at now.
func (l *leases) states(now time.Time) map[string]leaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]leaseState, len(l.observed))
	for node, o := range l.observed {
		if node == l.node {
			continue
		}
		fresh := renewing(o.heartbeats) && !o.seen.IsZero() && now.Sub(o.seen) < l.duration
		out[node] = leaseState{
			Fresh:    fresh,
			CutOff:   fresh && (o.heartbeats == heartbeatsCutOff || o.heartbeats == heartbeatsFallback),
			Fallback: fresh && o.heartbeats == heartbeatsFallback,
			Standby:  fresh && o.heartbeats == heartbeatsStandby,
		}
	}
	return out
}

// staleAt is when the first of the other nodes' fresh Leases goes stale
// (zero: none is fresh): who is alive changes then without any event.
func (l *leases) staleAt(now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for node, o := range l.observed {
		if node == l.node || !renewing(o.heartbeats) || o.seen.IsZero() {
			continue
		}
		if at := o.seen.Add(l.duration); at.After(now) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// info is every node's interface info, by node.
func (l *leases) info() map[string]map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]map[string]string, len(l.observed))
	for node, o := range l.observed {
		out[node] = o.info
	}
	return out
}

// nodes are the nodes that have a speaker Lease: the nodes a speaker runs on.
func (l *leases) nodes() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.observed))
	for node := range l.observed {
		out[node] = true
	}
	return out
}

// set records what this node's Lease should say; run writes it soon.
func (l *leases) set(info map[string]string, heartbeats string) {
	l.mu.Lock()
	changed := heartbeats != l.wantHeartbeats || !maps.Equal(info, l.wantInfo)
	if heartbeats != heartbeatsOK && l.wantHeartbeats == heartbeatsOK {
		l.renewFrom = time.Now()
	}
	l.wantInfo, l.wantHeartbeats = maps.Clone(info), heartbeats
	l.refence()
	l.mu.Unlock()
	if changed {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// fenced reports whether this node's Lease is overdue at now (fenceAt). It
// is asked before every ARP and NDP reply, so it takes no lock.
func (l *leases) fenced(now time.Time) bool {
	at := l.fence.Load()
	return at != 0 && now.UnixNano() >= at
}

// refence sets fence from the Lease's state; l.mu is held.
func (l *leases) refence() {
	var at int64
	if t := fenceAt(l.wantHeartbeats, l.renewFrom, l.renewed, l.duration); !t.IsZero() {
		at = t.UnixNano()
	}
	l.fence.Store(at)
}

// fenceAt is when this node's Lease becomes overdue while it must be
// renewed: two thirds of its duration after it was last renewed, or after
// renewing began (zero: never, since it need not be renewed). The other
// nodes count this node alive through that Lease for its duration after
// they saw a renewal, so once it is overdue they may take its addresses, and
// it must answer nothing (a node whose writes fail on a busy or unreachable
// API server). Not renewing (heartbeats flow everywhere), nothing depends on
// the Lease.
func fenceAt(heartbeats string, renewFrom, renewed time.Time, duration time.Duration) time.Time {
	if heartbeats == heartbeatsOK {
		return time.Time{}
	}
	since := renewFrom
	if renewed.After(since) {
		since = renewed
	}
	return since.Add(duration * 2 / 3)
}

// live reports whether this node's own renewals come back to it through its
// watch of the Leases: it saw its own Lease renewed within two thirds of the
// duration. Then it also sees the others' renewals, and may trust what the
// Leases say of who is alive.
func (l *leases) live(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	o, ok := l.observed[l.node]
	return ok && !o.seen.IsZero() && now.Sub(o.seen) < l.duration*2/3
}

// leaseWriteTimeout bounds one write of this node's Lease.
const leaseWriteTimeout = 5 * time.Second

// run keeps this node's Lease as set asks, renewing it while it must, and
// retries failed writes every second, until ctx ends.
func (l *leases) run(ctx context.Context, logger klog.Logger) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-timer.C:
		}
		l.mu.Lock()
		info, heartbeats := l.wantInfo, l.wantHeartbeats
		l.mu.Unlock()
		if info == nil {
			continue // set not called yet
		}
		wctx, cancel := context.WithTimeout(ctx, leaseWriteTimeout)
		next, err := l.keep(wctx, info, heartbeats, time.Now())
		cancel()
		switch {
		case err != nil:
			// The fallback and this node's interface info suffer; the
			// heartbeats go on.
			if !failing {
				logger.Error(err, "Cannot keep this speaker's Lease; retrying every second")
			}
			failing = true
			timer.Reset(time.Second)
			continue
		case failing:
			logger.Info("Keeping this speaker's Lease works again")
			failing = false
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// keep writes this node's Lease when its info or heartbeats state changed,
// or, while renewing, when a third of its duration passed since the last
// renewal. It reports when it wants to be called again (zero: on change only).
func (l *leases) keep(ctx context.Context, info map[string]string, heartbeats string, now time.Time) (time.Time, error) {
	renewing := heartbeats != heartbeatsOK
	l.mu.Lock()
	prev := l.written
	due := renewing && now.Sub(l.renewed) >= l.duration/3
	l.mu.Unlock()
	infoJSON, err := json.Marshal(info)
	if err != nil {
		return time.Time{}, err
	}
	next := time.Time{}
	if renewing {
		next = l.renewed.Add(l.duration / 3)
	}
	if prev != nil && prev.Annotations[annotationInterfaces] == string(infoJSON) && prev.Annotations[annotationHeartbeats] == heartbeats && !due {
		return next, nil
	}

	want := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: LeaseName(l.node), Namespace: l.namespace,
			Labels:      map[string]string{LabelLeaseComponent: leaseComponent, "app.kubernetes.io/name": "ironlb"},
			Annotations: map[string]string{annotationInterfaces: string(infoJSON), annotationHeartbeats: heartbeats},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       utilptr.To(l.node),
			LeaseDurationSeconds: utilptr.To(int32(max(l.duration/time.Second, 1))),
		},
	}
	if prev != nil && prev.Spec.RenewTime != nil {
		want.Spec.RenewTime = prev.Spec.RenewTime
	}
	if due || renewing && prev != nil && prev.Annotations[annotationHeartbeats] != heartbeats {
		want.Spec.RenewTime = &metav1.MicroTime{Time: now}
	}
	got, err := l.write(ctx, want, prev)
	if err != nil {
		return time.Time{}, fmt.Errorf("write Lease %s/%s: %w", l.namespace, want.Name, err)
	}
	l.mu.Lock()
	l.written = got
	if want.Spec.RenewTime != nil && want.Spec.RenewTime.Time.Equal(now) {
		l.renewed = now
		l.refence()
		next = now.Add(l.duration / 3)
	}
	l.mu.Unlock()
	return next, nil
}

// write creates or updates the Lease; a conflict (someone else changed it,
// or this speaker restarted) is resolved by reading it once.
func (l *leases) write(ctx context.Context, want, prev *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	api := l.client.CoordinationV1().Leases(l.namespace)
	if prev == nil {
		got, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: "ironlb-speaker"})
		if !apierrors.IsAlreadyExists(err) {
			return got, err
		}
		if prev, err = api.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return nil, err
		}
	}
	for range 2 {
		upd := prev.DeepCopy()
		upd.Labels, upd.Annotations = maps.Clone(want.Labels), maps.Clone(want.Annotations)
		upd.Spec = want.Spec
		got, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: "ironlb-speaker"})
		if !apierrors.IsConflict(err) {
			return got, err
		}
		if prev, err = api.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("lease %s kept changing under this speaker", want.Name)
}
