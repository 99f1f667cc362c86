package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// BGPPeerResource is the BGPPeer resource.
var BGPPeerResource = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")

func (s *Speaker) peerList() []*v1alpha1.BGPPeer {
	return fromStore[v1alpha1.BGPPeer](s, s.bgpPeers.GetStore().List(), "BGPPeer")
}

// bgpAnnouncer keeps this node's BGP sessions and routes as the BGP plan
// says, and writes this node's entries of BGPPeer status. It owns all BGP
// state of the speaker.
type bgpAnnouncer struct {
	node      string
	namespace string // of password Secrets that name none
	client    kubernetes.Interface
	dynamic   dynamic.Interface
	logger    klog.Logger
	manager   *bgp.Manager
	// status has one key: write this node's entries of BGPPeer status.
	status workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// problems are BGPPeers this node cannot use, with the reason.
	problems map[string]string
	// lastPeers and lastRoutes are what the last Apply gave the manager.
	lastPeers  []bgp.Peer
	lastRoutes []bgp.Route
	// written is what this node last wrote to each BGPPeer.
	written map[string]v1alpha1.BGPPeerNodeStatus
}

func newBGPAnnouncer(cfg Config, manager *bgp.Manager) *bgpAnnouncer {
	return &bgpAnnouncer{
		node: cfg.Node, namespace: cfg.Namespace, client: cfg.Client, dynamic: cfg.Dynamic,
		logger: cfg.Logger.WithName("bgp"), manager: manager,
		status:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		written: map[string]v1alpha1.BGPPeerNodeStatus{},
	}
}

// Apply makes the sessions and routes what p.bgp says.
func (b *bgpAnnouncer) Apply(ctx context.Context, p *plans) error {
	return b.advertise(ctx, p.bgp, p.peers, p.node)
}

// Stop withdraws every route and closes the sessions: routers move traffic
// before this node goes.
func (b *bgpAnnouncer) Stop(ctx context.Context) {
	b.manager.Shutdown(ctx)
	b.status.ShutDown()
}

// run writes BGPPeer status when a session changes state, until ctx ends.
func (b *bgpAnnouncer) run(ctx context.Context) {
	go b.statusWorker(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.manager.Changes():
			b.status.Add(syncKey)
		}
	}
}

// advertise makes this node's BGP sessions and routes what the plan says.
func (b *bgpAnnouncer) advertise(ctx context.Context, plan map[netip.Addr]*advertisement, peers []*v1alpha1.BGPPeer, node *v1.Node) error {
	if node == nil {
		return nil
	}
	var want []bgp.Peer
	problems := map[string]string{}
	for _, p := range peers {
		sel, err := selectorOf(p.Spec.NodeSelector)
		if err != nil || !sel.Matches(labels.Set(node.Labels)) {
			continue
		}
		peer, err := b.sessionFor(ctx, p)
		if err != nil {
			problems[p.Name] = err.Error()
			b.logger.Error(err, "BGPPeer not usable", "peer", p.Name)
			continue
		}
		want = append(want, peer)
	}
	if err := b.manager.SetPeers(ctx, want); err != nil {
		return err
	}
	var routes []bgp.Route
	for _, a := range plan {
		mine, ok := a.peers[b.node]
		if !ok {
			continue
		}
		hop := internalIP(node, a.addr)
		if !hop.IsValid() {
			continue // no address of that family: nothing to give as next hop
		}
		routes = append(routes, bgp.Route{Prefix: a.prefix, NextHop: hop, Communities: a.communities, LocalPref: a.localPref, Peers: mine})
	}
	slices.SortFunc(routes, func(x, y bgp.Route) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	// Several addresses of one aggregate make one route.
	routes = slices.CompactFunc(routes, func(x, y bgp.Route) bool { return x.Prefix == y.Prefix })
	if err := b.manager.SetRoutes(ctx, routes); err != nil {
		return err
	}
	// Status is read from GoBGP (a listing per peer) only when what this
	// node asked for changed; session changes queue it on their own.
	b.mu.Lock()
	changed := !maps.Equal(b.problems, problems) || !slices.EqualFunc(b.lastPeers, want, peerEqual) || !slices.EqualFunc(b.lastRoutes, routes, routeEqual)
	b.problems, b.lastPeers, b.lastRoutes = problems, want, routes
	b.mu.Unlock()
	if changed {
		b.status.Add(syncKey)
	}
	return nil
}

// sessionFor turns a BGPPeer into a session, reading its password Secret
// (only the Secret it names).
func (b *bgpAnnouncer) sessionFor(ctx context.Context, p *v1alpha1.BGPPeer) (bgp.Peer, error) {
	addr, err := netip.ParseAddr(p.Spec.Address)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("BGPPeer %s: address %q: %w", p.Name, p.Spec.Address, err)
	}
	peer := bgp.Peer{
		Name:            p.Name,
		Address:         addr,
		Port:            uint16(p.Spec.Port),
		ASN:             uint32(p.Spec.ASN),
		LocalASN:        uint32(p.Spec.LocalASN),
		EBGPMultihop:    p.Spec.EBGPMultihop,
		GracefulRestart: p.Spec.GracefulRestart,
	}
	for _, d := range []struct {
		in  *metav1.Duration
		out *time.Duration
	}{{p.Spec.HoldTime, &peer.HoldTime}, {p.Spec.KeepaliveTime, &peer.KeepaliveTime}, {p.Spec.ConnectTime, &peer.ConnectTime}} {
		if d.in != nil {
			*d.out = d.in.Duration
		}
	}
	if p.Spec.SourceAddress != "" {
		if peer.SourceAddress, err = netip.ParseAddr(p.Spec.SourceAddress); err != nil {
			return bgp.Peer{}, fmt.Errorf("BGPPeer %s: sourceAddress %q: %w", p.Name, p.Spec.SourceAddress, err)
		}
	}
	if ref := p.Spec.PasswordSecretRef; ref != nil {
		ns := ref.Namespace
		if ns == "" {
			ns = b.namespace
		}
		secret, err := b.client.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsForbidden(err) {
			return bgp.Peer{}, fmt.Errorf("BGPPeer %s: password Secret %s/%s: ironlb-speaker may not read it (it reads Secrets by name in %s only; the RBAC in deploy/ grants no more): %w",
				p.Name, ns, ref.Name, b.namespace, err)
		}
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("BGPPeer %s: password Secret %s/%s: %w", p.Name, ns, ref.Name, err)
		}
		pw, ok := secret.Data["password"]
		if !ok {
			return bgp.Peer{}, fmt.Errorf("BGPPeer %s: Secret %s/%s has no key \"password\"", p.Name, ns, ref.Name)
		}
		peer.Password = string(pw)
	}
	return peer, nil
}

// bgpStatusWorker writes this node's entry of every BGPPeer's status.nodes.
func (b *bgpAnnouncer) statusWorker(ctx context.Context) {
	for {
		key, quit := b.status.Get()
		if quit {
			return
		}
		if err := b.writePeerStatus(ctx); err != nil {
			b.logger.Error(err, "Cannot write BGPPeer status; retrying")
			b.status.AddRateLimited(key)
		} else {
			b.status.Forget(key)
		}
		b.status.Done(key)
	}
}

// writePeerStatus applies, per BGPPeer, this node's entry (under a field
// manager of this node's own, so that each speaker owns exactly its entry of
// the list), and drops the entry from peers this node no longer has.
func (b *bgpAnnouncer) writePeerStatus(ctx context.Context) error {
	st := b.manager.Status(ctx)
	b.mu.Lock()
	problems := b.problems
	written := b.written
	b.mu.Unlock()
	manager := v1alpha1.FieldManagerSpeaker + "-" + b.node
	now := map[string]v1alpha1.BGPPeerNodeStatus{}
	bgpSessionUp.Reset()
	bgpPrefixes.Reset()
	bgpUpdates.Reset()
	for name, ps := range st {
		up := 0.0
		if ps.State == bgp.StateEstablished {
			up = 1
		}
		bgpSessionUp.WithLabelValues(name).Set(up)
		bgpPrefixes.WithLabelValues(name).Set(float64(ps.Advertised))
		bgpUpdates.WithLabelValues(name).Set(float64(ps.UpdatesSent))
		now[name] = v1alpha1.BGPPeerNodeStatus{
			Node: b.node, State: ps.State, Since: metav1.NewTime(ps.Since.Truncate(time.Second)),
			PrefixesAdvertised: int32(ps.Advertised), PrefixesReceived: int32(ps.Received), Message: ps.LastError,
		}
	}
	for name, msg := range problems {
		now[name] = v1alpha1.BGPPeerNodeStatus{Node: b.node, State: "Invalid", Message: msg}
	}
	var errs []error
	for name, entry := range now {
		if prev, ok := written[name]; ok && prev == entry {
			continue
		}
		if err := b.applyPeerStatus(ctx, name, manager, []any{entryObject(entry)}); err != nil {
			errs = append(errs, err)
			continue
		}
		written[name] = entry
	}
	for name := range written {
		if _, ok := now[name]; ok {
			continue
		}
		if err := b.applyPeerStatus(ctx, name, manager, []any{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		delete(written, name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d BGPPeer status writes failed, first: %w", len(errs), errs[0])
	}
	return nil
}

func entryObject(e v1alpha1.BGPPeerNodeStatus) map[string]any {
	m := map[string]any{"node": e.Node, "state": e.State}
	if !e.Since.IsZero() {
		m["since"] = e.Since.UTC().Format(time.RFC3339)
	}
	if e.PrefixesAdvertised != 0 {
		m["prefixesAdvertised"] = int64(e.PrefixesAdvertised)
	}
	if e.PrefixesReceived != 0 {
		m["prefixesReceived"] = int64(e.PrefixesReceived)
	}
	if e.Message != "" {
		m["message"] = e.Message
	}
	return m
}

func (b *bgpAnnouncer) applyPeerStatus(ctx context.Context, name, manager string, nodes []any) error {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       "BGPPeer",
		"metadata":   map[string]any{"name": name},
		"status":     map[string]any{"nodes": nodes},
	}}
	_, err := b.dynamic.Resource(BGPPeerResource).ApplyStatus(ctx, name, obj, metav1.ApplyOptions{FieldManager: manager, Force: true})
	if err != nil {
		return fmt.Errorf("BGPPeer %s: %w", name, err)
	}
	return nil
}

func peerEqual(a, b bgp.Peer) bool { return a == b }

func routeEqual(a, b bgp.Route) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.Peers, b.Peers) && (a.LocalPref == nil) == (b.LocalPref == nil) && (a.LocalPref == nil || *a.LocalPref == *b.LocalPref)
}
