package speaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

func (s *Speaker) peerList() []*v1alpha1.BGPPeer {
	return fromStore[v1alpha1.BGPPeer](s, s.bgpPeers.GetStore().List(), "BGPPeer")
}

// bgpManager is what the announcer uses of bgp.Manager.
type bgpManager interface {
	SetPeers(ctx context.Context, peers []bgp.Peer) error
	SetRoutes(ctx context.Context, routes []bgp.Route) error
	Status(ctx context.Context) map[string]bgp.PeerStatus
	Changes() <-chan struct{}
	Shutdown(ctx context.Context)
}

// bgpAnnouncer keeps this node's BGP sessions and routes as the BGP plan
// says, and writes this node's entries of BGPPeer status. It owns all BGP
// state of the speaker.
type bgpAnnouncer struct {
	node      string
	namespace string // of password Secrets that name none
	dynamic   dynamic.Interface
	logger    klog.Logger
	manager   bgpManager
	passwords passwordSource
	// status has one key: write this node's entries of BGPPeer status.
	status workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// problems are BGPPeers this node cannot use, with the reason; notes
	// are said about sessions it keeps (a password it could not read).
	problems, notes map[string]string
	// secrets are the password Secrets of this node's sessions, by peer.
	secrets map[string]secretRef
	// lastPeers and lastRoutes are what the last Apply gave the manager.
	lastPeers  []bgp.Peer
	lastRoutes []bgp.Route
	// written is what this node last wrote to each BGPPeer.
	written map[string]v1alpha1.BGPPeerNodeStatus
}

// newBGPAnnouncer announces through manager; resync asks for a sync (a
// password Secret changed).
func newBGPAnnouncer(cfg Config, manager bgpManager, resync func()) *bgpAnnouncer {
	return &bgpAnnouncer{
		node: cfg.Node, namespace: cfg.Namespace, dynamic: cfg.Dynamic,
		logger: cfg.Logger.WithName("bgp"), manager: manager,
		passwords: newPasswordReader(cfg.Client, cfg.Namespace, resync),
		status:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		written:   map[string]v1alpha1.BGPPeerNodeStatus{},
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
	b.passwords.stop()
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
// A BGPPeer this node cannot use is left out and reported in its status;
// it never keeps the other peers from their sessions and routes.
func (b *bgpAnnouncer) advertise(ctx context.Context, plan map[netip.Addr]*advertisement, peers []*v1alpha1.BGPPeer, node *v1.Node) error {
	if node == nil {
		return nil
	}
	chosen, problems := choosePeers(peers, node, b.namespace)
	refs := map[secretRef]bool{}
	for _, c := range chosen {
		if c.secret != (secretRef{}) {
			refs[c.secret] = true
		}
	}
	b.passwords.follow(refs)
	b.mu.Lock()
	last, lastProblems := b.lastPeers, b.problems
	b.secrets = map[string]secretRef{}
	for _, c := range chosen {
		if c.secret != (secretRef{}) {
			b.secrets[c.peer.Name] = c.secret
		}
	}
	b.mu.Unlock()
	var want []bgp.Peer
	notes := map[string]string{}
	for _, c := range chosen {
		peer := c.peer
		if c.secret != (secretRef{}) {
			pw, err := b.passwords.password(c.secret)
			i := slices.IndexFunc(last, func(p bgp.Peer) bool { return p.Name == peer.Name })
			switch {
			case err == nil:
				peer.Password = pw
			case i >= 0 && last[i].Password != "":
				// The session goes on with the password it has.
				peer.Password = last[i].Password
				notes[peer.Name] = fmt.Sprintf("password Secret %s: %v; the session keeps the last password read", c.secret, err)
			case errors.Is(err, errPasswordPending):
				continue // the watch asks for a sync once it has read the Secret
			default:
				problems[peer.Name] = fmt.Sprintf("password Secret %s: %v", c.secret, err)
				continue
			}
		}
		want = append(want, peer)
	}
	var errs []error
	for _, err := range flatten(b.manager.SetPeers(ctx, want)) {
		var pe *bgp.PeerError
		if errors.As(err, &pe) && pe.Peer != "" {
			problems[pe.Peer] = pe.Error()
			continue
		}
		errs = append(errs, err)
	}
	for name, msg := range problems {
		if lastProblems[name] != msg {
			b.logger.Error(errors.New(msg), "BGPPeer not usable on this node; the other peers go on", "peer", name)
		}
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
		errs = append(errs, err)
	}
	// Status is read from GoBGP (a listing per peer) only when what this
	// node asked for changed; session changes queue it on their own.
	b.mu.Lock()
	changed := !maps.Equal(b.problems, problems) || !maps.Equal(b.notes, notes) ||
		!slices.EqualFunc(b.lastPeers, want, peerEqual) || !slices.EqualFunc(b.lastRoutes, routes, routeEqual)
	b.problems, b.notes, b.lastPeers, b.lastRoutes = problems, notes, want, routes
	b.mu.Unlock()
	if changed {
		b.status.Add(syncKey)
	}
	return errors.Join(errs...)
}

// flatten lists the errors errors.Join put together.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// chosenPeer is a BGPPeer this node peers with: its session without the
// password, and the Secret that holds the password (zero for none).
type chosenPeer struct {
	peer   bgp.Peer
	secret secretRef
}

// choosePeers are the BGPPeers node peers with, in name order, and those
// it refuses with why: a spec the BGP speaker cannot use (the API server
// accepts some: timers that are not whole seconds, a keepalive not below
// the hold time once the defaults are filled in) or an address an earlier
// BGPPeer by name already has (one session per router address).
// namespace is that of password Secrets that name none.
func choosePeers(peers []*v1alpha1.BGPPeer, node *v1.Node, namespace string) ([]chosenPeer, map[string]string) {
	sorted := slices.SortedFunc(slices.Values(peers), func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	var chosen []chosenPeer
	refused := map[string]string{}
	byAddr := map[netip.Addr]string{}
	for _, p := range sorted {
		sel, err := selectorOf(p.Spec.NodeSelector)
		if err != nil {
			refused[p.Name] = fmt.Sprintf("invalid nodeSelector: %v", err)
			continue
		}
		if !sel.Matches(labels.Set(node.Labels)) {
			continue
		}
		peer, err := peerSpec(p)
		if err != nil {
			refused[p.Name] = err.Error()
			continue
		}
		if other, taken := byAddr[peer.Address]; taken {
			refused[p.Name] = fmt.Sprintf("address %s is also BGPPeer %s's, which is used: one session per router address, the first BGPPeer by name", peer.Address, other)
			continue
		}
		byAddr[peer.Address] = p.Name
		peer.BFD = bfdFor(p.Spec.BFD, peer, node)
		c := chosenPeer{peer: peer}
		if ref := p.Spec.PasswordSecretRef; ref != nil {
			c.secret = secretRef{namespace: cmp.Or(ref.Namespace, namespace), name: ref.Name}
		}
		chosen = append(chosen, c)
	}
	return chosen, refused
}

// bfdFor is the BFD session a BGPPeer's spec.bfd asks for on node: from
// the BGP session's source address, else from the node's InternalIP of the
// peer's family; none without spec.bfd or such an address.
func bfdFor(spec *v1alpha1.BFDSettings, peer bgp.Peer, node *v1.Node) bgp.BFD {
	if spec == nil {
		return bgp.BFD{}
	}
	local := peer.SourceAddress
	if !local.IsValid() {
		local = internalIP(node, peer.Address)
	}
	if !local.IsValid() {
		return bgp.BFD{}
	}
	b := bgp.BFD{Enabled: true, Local: local}
	if spec.MinReceive != nil {
		b.MinRx = spec.MinReceive.Duration
	}
	if spec.MinTransmit != nil {
		b.MinTx = spec.MinTransmit.Duration
	}
	if spec.Multiplier != nil && *spec.Multiplier > 0 && *spec.Multiplier <= 255 {
		b.Multiplier = uint8(*spec.Multiplier)
	}
	return b
}

// peerSpec turns a BGPPeer into a session without its password, or says
// why the BGP speaker cannot use it.
func peerSpec(p *v1alpha1.BGPPeer) (bgp.Peer, error) {
	addr, err := netip.ParseAddr(p.Spec.Address)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("address %q: %w", p.Spec.Address, err)
	}
	peer := bgp.Peer{
		Name:            p.Name,
		Address:         addr.Unmap(),
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
			return bgp.Peer{}, fmt.Errorf("sourceAddress %q: %w", p.Spec.SourceAddress, err)
		}
	}
	if ref := p.Spec.PasswordSecretRef; ref != nil && ref.Name == "" {
		return bgp.Peer{}, errors.New("passwordSecretRef names no Secret")
	}
	if err := peer.Validate(); err != nil {
		return bgp.Peer{}, err
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
	problems, notes := b.problems, b.notes
	written := b.written
	secrets := b.secrets
	b.mu.Unlock()
	for name, ps := range st {
		if ref, ok := secrets[name]; ok && ps.State != bgp.StateEstablished {
			b.passwords.refresh(ref) // perhaps a rotated password
		}
	}
	manager := v1alpha1.FieldManagerSpeaker + "-" + b.node
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
	}
	now := peerEntries(b.node, st, problems, notes)
	var errs []error
	for name, entry := range now {
		if prev, ok := written[name]; ok && equality.Semantic.DeepEqual(prev, entry) {
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

// peerEntries are this node's entries of BGPPeer status: the sessions as
// GoBGP reports them (with what notes say about them), and the BGPPeers
// this node refuses, as Invalid with the reason.
func peerEntries(node string, st map[string]bgp.PeerStatus, problems, notes map[string]string) map[string]v1alpha1.BGPPeerNodeStatus {
	now := map[string]v1alpha1.BGPPeerNodeStatus{}
	for name, ps := range st {
		msg := ps.LastError
		if note := notes[name]; note != "" {
			msg = strings.Join(slices.DeleteFunc([]string{note, msg}, func(s string) bool { return s == "" }), "; ")
		}
		entry := v1alpha1.BGPPeerNodeStatus{
			Node: node, State: ps.State, Since: metav1.NewTime(ps.Since.Truncate(time.Second)),
			PrefixesAdvertised: int32(ps.Advertised), PrefixesReceived: int32(ps.Received), Message: msg,
		}
		if b := ps.BFD; b != nil {
			entry.BFD = &v1alpha1.BFDStatus{State: b.State, Since: metav1.NewTime(b.Since.Truncate(time.Second)), Message: b.Message}
		}
		now[name] = entry
	}
	for name, msg := range problems {
		now[name] = v1alpha1.BGPPeerNodeStatus{Node: node, State: stateInvalid, Message: msg}
	}
	return now
}

// stateInvalid is the state in BGPPeer status of a BGPPeer a node refuses.
const stateInvalid = "Invalid"

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
	if b := e.BFD; b != nil {
		bfd := map[string]any{"state": b.State}
		if !b.Since.IsZero() {
			bfd["since"] = b.Since.UTC().Format(time.RFC3339)
		}
		if b.Message != "" {
			bfd["message"] = b.Message
		}
		m["bfd"] = bfd
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
	_, err := b.dynamic.Resource(v1alpha1.BGPPeerResource).ApplyStatus(ctx, name, obj, metav1.ApplyOptions{FieldManager: manager, Force: true})
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
