package speaker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/internal/clusterkey"
	"github.com/ironlb/ironlb/internal/health"
	"github.com/ironlb/ironlb/internal/lbclass"
	"github.com/ironlb/ironlb/speaker/bfd"
	"github.com/ironlb/ironlb/speaker/bgp"
	"github.com/ironlb/ironlb/speaker/l2"
	"github.com/ironlb/ironlb/speaker/member"
)

// Config configures a Speaker.
type Config struct {
	Node       string
	Classifier lbclass.Classifier
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	// PeerPort is the UDP port of the heartbeats (member.DefaultPort if 0).
	PeerPort uint16
	// HeartbeatInterval and HeartbeatTimeout tune how fast a dead speaker is
	// noticed (member's defaults if 0).
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// LeaseDuration is how long a speaker's Lease stays fresh in the
	// fallback, when heartbeats do not flow (DefaultLeaseDuration if 0).
	LeaseDuration time.Duration
	// L2Probing is how an address this node is to answer is looked at
	// first, so that it is answered only once no other host answers it
	// (l2.DefaultProbing if zero; a zero Window with a MaxWait: no look).
	L2Probing l2.Probing
	// Namespace is the speakers' own: where their Leases and the cluster
	// key Secret are, and where a BGPPeer's password Secret is looked for
	// when its reference names no namespace.
	Namespace string
	Logger    klog.Logger
	// Health is what the speaker reports to the kubelet's probes (nil: nothing): ready once
	// its caches are synced, its heartbeats and BGP server run and its first sync is done;
	// live while no sync runs for longer than it ever should.
	Health *health.Status
}

// The parts of a speaker that its readiness waits for, and its sync loop.
const (
	partCaches     = "caches"
	partHeartbeats = "heartbeats"
	partBGP        = "bgp"
	partSync       = "sync"
)

// DefaultLeaseDuration is how long a speaker's Lease stays fresh in the
// fallback; renewed every third of it.
const DefaultLeaseDuration = 6 * time.Second

// Speaker announces the addresses this node owns. It watches, decides (the
// plans, and owner.go for who answers) and hands the plans to its
// announcers, each of which owns its own state.
type Speaker struct {
	cfg       Config
	logger    klog.Logger
	factory   informers.SharedInformerFactory
	dynamic   dynamicinformer.DynamicSharedInformerFactory
	services  cache.SharedIndexInformer
	endpoints *localEndpoints
	nodes     cache.SharedIndexInformer
	pools     cache.SharedIndexInformer
	bgpPeers  cache.SharedIndexInformer
	members   *member.Members
	keys      *keyWatch
	leases    *leases
	timing    timing
	events    *eventSink

	l2         *l2Announcer
	bgp        *bgpAnnouncer
	conditions *conditionWriter

	queue   workqueue.TypedRateLimitingInterface[string] // one key: bring the plans up to date
	planner *planner                                     // only sync uses it
	bfd     *bfd.Mux                                     // the BFD sessions of the BGP peers that ask for one

	myIP netip.Addr

	mu sync.Mutex
	// info is this node's interface info, as its Lease tells the others.
	info map[string]string

	// cutOffSince is when the heartbeats last showed this node isolated;
	// zero while they do not; returnedAt, when it last came back from
	// answering nothing (modeCutOff, lastMode) after it had been connected
	// once (not the first connection after start). Only sync uses them.
	cutOffSince   time.Time
	returnedAt    time.Time
	returnedRV    string    // the Services cache's resource version then
	caughtUpAt    time.Time // when the cache was first seen past returnedRV
	connectedOnce bool
	lastMode      mode
}

// RegisterBFDMetrics registers the metrics of the speaker's BFD sessions
// (ironlb_speaker_bfd_*) with reg.
func (s *Speaker) RegisterBFDMetrics(reg prometheus.Registerer) error {
	return s.bfd.RegisterMetrics(reg)
}

// announcer applies what one sync decided. Each announcer owns its state;
// the speaker only hands it the latest plans.
type announcer interface {
	Apply(ctx context.Context, p *plans) error
	Stop(ctx context.Context)
}

// plans is what one sync decided, for the announcers.
type plans struct {
	in           inputs
	l2           map[netip.Addr]*announcement
	notAnnounced map[types.NamespacedName]string
	answer       map[string][]netip.Addr // by interface: what this node answers now
	bgp          map[netip.Addr]*advertisement
	peers        []*v1alpha1.BGPPeer
	node         *v1.Node // this node
	// conditions: this node's mode lets it write conditions for the others.
	conditions bool
	// viaLeases: this node is in the fallback (modeFallback).
	viaLeases  bool
	candidates map[string]bool // writers of Services without an L2 owner
	degraded   string          // why failover is slow now, for the conditions
}

// The keys of the speaker's queue, which one loop works: syncKey brings the
// plans up to date; sessionsKey has the condition writer follow the BGP
// sessions in BGPPeer status, with the plans of the last sync.
const (
	syncKey     = "sync"
	sessionsKey = "sessions"
)

// New wires the informers; Run starts everything.
func New(cfg Config) (*Speaker, error) {
	if cfg.Node == "" {
		return nil, errors.New("speaker: no node name (set --node-name or NODE_NAME)")
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = klog.Background()
	}
	cfg.Health.Wait(partCaches, "the informers have not synced yet")
	cfg.Health.Wait(partHeartbeats, "not started: the caches come first")
	cfg.Health.Wait(partBGP, "not started: the heartbeats come first")
	cfg.Health.Wait(partSync, "no sync done yet")
	s := &Speaker{
		cfg:     cfg,
		logger:  cfg.Logger,
		factory: informers.NewSharedInformerFactory(cfg.Client, 0),
		dynamic: dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		planner: newPlanner(),
		bfd:     bfd.NewMux(cfg.Logger.WithName("bfd")),
	}
	interval := cmp.Or(cfg.HeartbeatInterval, member.DefaultInterval)
	timeout := cmp.Or(cfg.HeartbeatTimeout, member.DefaultTimeout)
	s.timing = timing{
		Settle:        timeout + 2*interval,
		FallbackAfter: max(2*timeout, time.Second),
		LeaseDuration: cmp.Or(cfg.LeaseDuration, DefaultLeaseDuration),
	}
	s.keys = newKeyWatch(cfg.Client, cfg.Namespace, cfg.Logger.WithName("keys"))
	s.leases = newLeases(cfg.Client, cfg.Namespace, cfg.Node, s.timing.LeaseDuration)
	if _, err := s.leases.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.leases.observe(obj); s.queue.Add(syncKey) },
		UpdateFunc: func(_, obj any) { s.leases.observe(obj); s.queue.Add(syncKey) },
		DeleteFunc: func(obj any) { s.leases.forget(obj); s.queue.Add(syncKey) },
	}); err != nil {
		return nil, err
	}
	s.events = newEventSink(cfg.Client, cfg.Node)
	s.services = s.factory.InformerFor(&v1.Service{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredServiceInformer(c, metav1.NamespaceAll, resync, cache.Indexers{},
			func(o *metav1.ListOptions) { o.FieldSelector = serviceSelector })
	})
	// Responders open only in sync, after Run has made the membership.
	if cfg.L2Probing == (l2.Probing{}) {
		cfg.L2Probing = l2.DefaultProbing
	}
	s.l2 = newL2Announcer(cfg.Node, cfg.Logger, s.events, cfg.L2Probing, func() (bool, bool, bool) {
		return s.members.Answerable(), !s.leases.fenced(time.Now()), s.members.Heard()
	})
	s.conditions = newConditionWriter(cfg, s.services.GetStore(), s.events)
	s.endpoints = newLocalEndpoints(cfg.Client, s.wantsEndpoints, func(matters bool) {
		if !matters {
			syncTriggers.WithLabelValues("EndpointSlice", "ignored").Inc()
			return
		}
		syncTriggers.WithLabelValues("EndpointSlice", "queued").Inc()
		s.queue.Add(syncKey)
	}, cfg.Logger.WithName("endpoints"))
	s.nodes = s.factory.Core().V1().Nodes().Informer()
	s.pools = s.dynamic.ForResource(v1alpha1.IPPoolResource).Informer()
	s.bgpPeers = s.dynamic.ForResource(v1alpha1.BGPPeerResource).Informer()
	for inf, slim := range map[cache.SharedIndexInformer]cache.TransformFunc{
		s.services: slimService(cfg.Classifier), s.nodes: slimNode,
		s.pools: slimUnstructured, s.bgpPeers: slimUnstructured,
	} {
		if err := inf.SetTransform(slim); err != nil {
			return nil, err
		}
	}
	// A change leads to a sync only if it can change a plan.
	for inf, h := range map[cache.SharedIndexInformer]cache.ResourceEventHandler{
		s.services: s.onChange("Service", func(old, cur any) bool {
			o, _ := old.(*lbService)
			c, _ := cur.(*lbService)
			return serviceMatters(o, c)
		}),
		s.nodes: s.onChange("Node", func(old, cur any) bool {
			o, _ := old.(*v1.Node)
			c, _ := cur.(*v1.Node)
			return nodeMatters(o, c)
		}),
		s.pools:    s.onChange("IPPool", nil),
		s.bgpPeers: s.onBGPPeerChange(),
	} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
	}
	// The endpoints kept follow which Services need them.
	follow := func(old, cur any) {
		o, _ := old.(*lbService)
		c, _ := cur.(*lbService)
		s.followEndpoints(o, c)
	}
	if _, err := s.services.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { follow(nil, obj) },
		UpdateFunc: follow,
		DeleteFunc: func(obj any) { follow(unwrap(obj), nil) },
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// onChange queues a sync for a change of kind (old → cur: nil when added or
// deleted) that matters (every change when matters is nil), and counts it.
func (s *Speaker) onChange(kind string, matters func(old, cur any) bool) cache.ResourceEventHandler {
	changed := func(old, cur any) {
		if matters != nil && !matters(old, cur) {
			syncTriggers.WithLabelValues(kind, "ignored").Inc()
			return
		}
		syncTriggers.WithLabelValues(kind, "queued").Inc()
		s.queue.Add(syncKey)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { changed(nil, obj) },
		UpdateFunc: changed,
		DeleteFunc: func(obj any) { changed(unwrap(obj), nil) },
	}
}

// onBGPPeerChange queues a sync for a BGPPeer change that can change a plan
// or a session (bgpPeerMatters). Any other change is to its status, which
// every speaker writes when its session changes and only the Announced
// conditions read: that has the condition writer alone look again
// (sessionsKey), and is counted with result "conditions".
func (s *Speaker) onBGPPeerChange() cache.ResourceEventHandler {
	changed := func(old, cur any) {
		if !bgpPeerMatters(old, cur) {
			syncTriggers.WithLabelValues("BGPPeer", "conditions").Inc()
			s.queue.Add(sessionsKey)
			return
		}
		syncTriggers.WithLabelValues("BGPPeer", "queued").Inc()
		s.queue.Add(syncKey)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { changed(nil, obj) },
		UpdateFunc: changed,
		DeleteFunc: func(obj any) { changed(unwrap(obj), nil) },
	}
}

// wantsEndpoints reports whether the plans read the endpoints of svc: it is
// ironlb's, with externalTrafficPolicy Local.
func (s *Speaker) wantsEndpoints(svc types.NamespacedName) bool {
	obj, exists, _ := s.services.GetStore().GetByKey(svc.String())
	if !exists {
		return false
	}
	cur, _ := obj.(*lbService)
	return needsEndpoints(cur)
}

// followEndpoints tells the endpoints whose Service began or stopped
// needing them (old → cur; nil when added or deleted).
func (s *Speaker) followEndpoints(old, cur *lbService) {
	was, is := needsEndpoints(old), needsEndpoints(cur)
	switch svc := cmp.Or(cur, old); {
	case is && !was:
		s.endpoints.wantNow(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	case was && !is:
		s.endpoints.forget(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	}
}

// Run runs the speaker until ctx ends. On the way out it stops answering
// first and then tells the other speakers it leaves, so they take over at once.
func (s *Speaker) Run(ctx context.Context) error {
	defer s.queue.ShutDown()
	defer s.conditions.Stop(ctx)
	s.factory.Start(ctx.Done())
	s.dynamic.Start(ctx.Done())
	go s.keys.informer.Run(ctx.Done())
	go s.leases.informer.Run(ctx.Done())
	go s.leases.run(ctx, s.logger)
	for _, inf := range []cache.SharedIndexInformer{s.services, s.nodes, s.pools, s.bgpPeers, s.keys.informer, s.leases.informer} {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return ctx.Err()
		}
	}
	// Which slices to keep is read from the Services cache.
	go s.endpoints.run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), s.endpoints.hasSynced) {
		return ctx.Err()
	}
	s.cfg.Health.Up(partCaches)
	s.cfg.Health.Wait(partHeartbeats, "waiting for this node's Node object and InternalIP")
	myIP, err := s.nodeIP(ctx)
	if err != nil {
		return err
	}
	s.myIP = myIP
	s.cfg.Health.Wait(partHeartbeats, "waiting for the cluster key Secret")
	keys, err := s.keys.wait(ctx)
	if err != nil {
		return err
	}
	s.members, err = s.startMembers(ctx, member.Config{
		Node:     s.cfg.Node,
		Bind:     netip.AddrPortFrom(myIP, s.cfg.PeerPort),
		Key:      keys.Sign,
		Accept:   keys.Accept,
		Interval: s.cfg.HeartbeatInterval,
		Timeout:  s.cfg.HeartbeatTimeout,
		Logger:   s.logger.WithName("member"),
	})
	if err != nil {
		return err
	}
	// Until its first sync says otherwise, a new speaker answers nothing and
	// its heartbeats say so.
	s.members.SetAbstain(true)
	s.refreshInfo()
	manager, err := bgp.New(ctx, bgp.Config{RouterID: routerID(myIP), ListenPort: -1, Logger: s.logger.WithName("bgp"), BFD: s.bfd})
	if err != nil {
		return err
	}
	s.cfg.Health.Up(partBGP)
	s.bgp = newBGPAnnouncer(s.cfg, manager, func() { s.queue.Add(syncKey) })
	// The heartbeats outlive ctx by the time it takes to stop answering.
	memberCtx, stopMembers := context.WithCancel(context.WithoutCancel(ctx))
	membersDone := make(chan error, 1)
	go func() { membersDone <- s.members.Run(memberCtx) }()
	go s.watchMembers(ctx)
	go s.watchKeys(ctx, keys.Sign)
	go s.watchLinks(ctx)
	go s.bgp.run(ctx)
	s.conditions.run(ctx, 4)
	s.logger.Info("Speaker running", "node", s.cfg.Node, "heartbeats", netip.AddrPortFrom(myIP, s.cfg.PeerPort))

	s.queue.Add(syncKey)
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for s.processNext(ctx) {
	}

	// Stop answering and withdraw before going: routers and hosts move
	// traffic before this node stops. The LAN first, then word that this
	// node leaves, at once, so the new owners of its addresses take over
	// within a datagram's trip; the routes and the conditions after that.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.l2.Stop(shutdownCtx)
	stopMembers()
	err = <-membersDone
	for _, a := range s.announcers() {
		if a != s.l2 {
			a.Stop(shutdownCtx)
		}
	}
	_ = s.bfd.Close()
	return err
}

func (s *Speaker) processNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if key == sessionsKey {
		s.conditions.followSessions(sessionsOf(s.peerList()))
		s.queue.Forget(key)
		return true
	}
	syncs.Inc()
	done := s.cfg.Health.Pass(partSync)
	err := s.sync(ctx)
	done()
	if err != nil {
		s.logger.Error(err, "Sync failed; retrying")
		s.cfg.Health.Wait(partSync, "the last sync failed: "+err.Error())
		s.queue.AddRateLimited(key)
		return true
	}
	s.cfg.Health.Up(partSync)
	s.queue.Forget(key)
	return true
}

// heartbeatRetry is how long a speaker waits before it tries again to start its heartbeats.
const heartbeatRetry = 2 * time.Second

// startMembers starts the heartbeats, trying again until they start: a port another process
// holds, say, keeps the speaker running and NotReady, with the error as the reason, instead
// of restarting it in a loop; it becomes Ready once the port is free.
func (s *Speaker) startMembers(ctx context.Context, cfg member.Config) (*member.Members, error) {
	for attempt := 0; ; attempt++ {
		m, err := member.New(cfg)
		if err == nil {
			s.cfg.Health.Up(partHeartbeats)
			s.cfg.Health.Wait(partBGP, "not started yet")
			return m, nil
		}
		s.cfg.Health.Wait(partHeartbeats, err.Error())
		if attempt%30 == 0 {
			s.logger.Error(err, "Cannot start the heartbeats; not Ready until they start, trying again", "node", s.cfg.Node, "every", heartbeatRetry)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(heartbeatRetry):
		}
	}
}

// nodeIP is this node's first InternalIP, where its heartbeats come from.
func (s *Speaker) nodeIP(ctx context.Context) (netip.Addr, error) {
	for i := 0; i < 300; i++ {
		if obj, ok, _ := s.nodes.GetStore().GetByKey(s.cfg.Node); ok {
			if ip := internalIP(obj.(*v1.Node), netip.Addr{}); ip.IsValid() {
				return ip, nil
			}
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(time.Second):
		}
		if i%10 == 0 {
			s.logger.Info("Waiting for this node's Node object and InternalIP", "node", s.cfg.Node)
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s: no Node object with an InternalIP", s.cfg.Node)
}

// internalIP is the node's first InternalIP, of like's family if like is valid.
func internalIP(n *v1.Node, like netip.Addr) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if !like.IsValid() || ip.Is4() == like.Is4() {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// routerID is this node's IPv4 address, or, on an IPv6-only node, an IPv4
// form derived from the last bytes of its IPv6 address (BGP wants 32 bits).
func routerID(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return ip
	}
	b := ip.As16()
	return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
}

// announcers are the parts that act on the plans, in the order they apply
// them and stop.
func (s *Speaker) announcers() []announcer { return []announcer{s.l2, s.bgp, s.conditions} }

func (s *Speaker) watchMembers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.members.Changes():
			s.queue.Add(syncKey)
		}
	}
}

// keyGrace is how long a signing key that was replaced without a rotation
// (the Secret deleted and created again with a new key) is still accepted:
// the speakers see the new key one by one, and would refuse each other's
// heartbeats meanwhile.
const keyGrace = 2 * time.Minute

// watchKeys hands a changed cluster key to the heartbeats.
func (s *Speaker) watchKeys(ctx context.Context, initial []byte) {
	prev := initial
	var grace <-chan time.Time
	apply := func(keys clusterkey.Keys, extra []byte) {
		accept := keys.Accept
		if extra != nil {
			accept = append(slices.Clone(accept), extra)
		}
		if err := s.members.SetKeys(keys.Sign, accept); err == nil {
			s.logger.Info("Cluster key changed", "accepted", len(accept))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-grace:
			grace = nil
			if keys, err := s.keys.current(); err == nil {
				apply(keys, nil)
			}
		case <-s.keys.changed:
			keys, err := s.keys.current()
			if err != nil {
				continue
			}
			var extra []byte
			if prev != nil && !slices.ContainsFunc(keys.Accept, func(k []byte) bool { return bytes.Equal(k, prev) }) {
				extra = prev
				grace = time.After(keyGrace)
				s.logger.Info("Cluster key replaced without a rotation: the old key stays accepted for a while", "for", keyGrace)
			}
			apply(keys, extra)
			prev = keys.Sign
		}
	}
}

// watchLinks follows the node's links, so that an interface going down
// moves its addresses (link awareness).
func (s *Speaker) watchLinks(ctx context.Context) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		s.logger.Error(err, "Cannot follow link changes; interface state is read on every sync only")
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			if s.refreshInfo() {
				s.queue.Add(syncKey)
			}
		}
	}
}

// refreshInfo finds which interfaces that matter are up here, for the
// Lease that tells the other speakers; it reports whether anything changed.
func (s *Speaker) refreshInfo() bool {
	info := map[string]string{}
	if def := interfaceWithAddr(s.myIP); def != "" {
		info[infoDefaultIf] = def
	}
	names := map[string]bool{}
	if def := info[infoDefaultIf]; def != "" {
		names[def] = true
	}
	for _, p := range s.poolList() {
		if p.Spec.L2 != nil {
			for _, n := range p.Spec.L2.Interfaces {
				names[n] = true
			}
		}
	}
	for n := range names {
		if linkUp(n) && s.l2.usable(n) {
			info[infoIfPrefix+n] = ifUp
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if maps.Equal(s.info, info) {
		return false
	}
	s.info = info
	return true
}

// linkUp reports whether the interface exists, is up and has carrier.
func linkUp(name string) bool {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return false
	}
	return a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown && a.RawFlags&0x10000 != 0 // IFF_LOWER_UP
}

// interfaceWithAddr is the interface that holds ip.
func interfaceWithAddr(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

func (s *Speaker) poolList() []*v1alpha1.IPPool {
	return fromStore[v1alpha1.IPPool](s, s.pools.GetStore().List(), "IPPool")
}

// fromStore converts a dynamic informer's objects, sorted by name; an object
// that does not parse is logged and left out.
func fromStore[T any, PT interface {
	*T
	GetName() string
}](s *Speaker, objs []any, kind string) []PT {
	var out []PT
	for _, obj := range objs {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var t PT = new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, t); err != nil {
			s.logger.Error(err, "Ignoring an object that does not parse", "kind", kind, "name", u.GetName())
			continue
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b PT) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// inputs reads the caches; alive comes from the membership, the records of
// owners from the Services' conditions.
func (s *Speaker) inputs(alive map[string]bool) inputs {
	in := inputs{
		slices:   map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		pools:    s.poolList(),
		nodes:    map[string]*v1.Node{},
		alive:    map[string]map[string]string{},
		recorded: map[netip.Addr]string{},
		self:     s.cfg.Node,
	}
	for _, obj := range s.services.GetStore().List() {
		svc := obj.(*lbService)
		if !svc.ours || len(svc.addrs) == 0 {
			continue
		}
		in.services = append(in.services, svc)
		key := svc.key()
		if es := s.endpoints.of(key); len(es) > 0 {
			in.slices[key] = es
		}
		maps.Copy(in.recorded, announcedOwners(svc))
	}
	for _, obj := range s.nodes.GetStore().List() {
		n := obj.(*v1.Node)
		in.nodes[n.Name] = n
	}
	info := s.leases.info()
	s.mu.Lock()
	info[s.cfg.Node] = s.info
	s.mu.Unlock()
	for name := range alive {
		in.alive[name] = info[name]
	}
	return in
}

// membership reads the heartbeats and the Leases at now, says what this
// node's Lease should say (leases.run writes it; nothing waits for the API
// server), and returns the view, this node's mode (owner.go) and the other
// nodes' Leases.
func (s *Speaker) membership(now time.Time) (member.View, mode, map[string]leaseState) {
	s.members.SetPeers(s.l2Members())
	// Pools may name interfaces not looked at yet.
	s.refreshInfo()
	view := s.members.View()
	if !view.Isolated {
		// Back from answering nothing (not from the fallback, where it
		// kept reading and writing through the API server).
		if !s.cutOffSince.IsZero() && s.connectedOnce && s.lastMode == modeCutOff {
			s.returnedAt, s.returnedRV, s.caughtUpAt = now, s.services.LastSyncResourceVersion(), time.Time{}
		}
		s.connectedOnce = true
		s.cutOffSince = time.Time{}
	} else if s.cutOffSince.IsZero() {
		s.cutOffSince = now
	}
	leases := s.leases.states(now)
	othersCutOff, othersHeard, othersInFallback := false, false, false
	for _, l := range leases {
		othersCutOff = othersCutOff || l.CutOff
		othersHeard = othersHeard || l.Standby
		othersInFallback = othersInFallback || l.Fallback
	}
	if !s.returnedAt.IsZero() && s.caughtUpAt.IsZero() && s.services.LastSyncResourceVersion() != s.returnedRV {
		s.caughtUpAt = now
	}
	catchUp := catchingUp(s.returnedAt, s.timing.LeaseDuration, s.caughtUpAt)
	md, wake := membershipMode(membershipInputs{
		View: view, CutOffSince: s.cutOffSince, OthersHeard: othersHeard, OthersInFallback: othersInFallback,
		LeasesLive: s.leases.live(now), CatchUpUntil: catchUp,
	}, now, s.timing)
	heartbeats := leaseSays(view, md, s.lastMode, renewsLease(view, s.cutOffSince, now, s.timing, othersCutOff))
	if heartbeats == heartbeatsFallback && md != modeFallback {
		s.queue.Add(syncKey) // to say what follows, once this sync stopped answering
	}
	s.mu.Lock()
	info := s.info
	s.mu.Unlock()
	s.leases.set(info, heartbeats)
	renewFrom := time.Time{} // a node cut off renews its Lease from then on
	if view.Isolated {
		renewFrom = s.cutOffSince.Add(s.timing.FallbackAfter)
	}
	for _, at := range []time.Time{wake, s.leases.staleAt(now), renewFrom} {
		if at.Before(now) {
			continue
		}
		s.queue.AddAfter(syncKey, at.Sub(now)+time.Millisecond)
	}
	s.members.SetAbstain(abstains(md))
	setMode(md)
	s.lastMode = md
	return view, md, leases
}

// sync recomputes the plans and hands them to the announcers: the L2
// responders answer what this node owns, BGP advertises, and the condition
// writer queues the conditions this node writes.
func (s *Speaker) sync(ctx context.Context) error {
	now := time.Now()
	view, md, leases := s.membership(now)
	alive := aliveNodes(s.cfg.Node, md, view, leases)
	in := s.inputs(alive)
	peers := s.peerList()
	plan, notAnnounced, bgp := s.planner.plan(in, peers)
	partsComputed.Add(float64(s.planner.computed))

	answering := s.l2.answering()
	want := map[string][]netip.Addr{}
	for addr, a := range plan {
		if !mayAnswer(md, a.owner == s.cfg.Node, answering[addr]) {
			continue
		}
		for _, ifc := range a.interfaces {
			want[ifc] = append(want[ifc], addr)
		}
	}
	if md == modeCutOff && len(answering) > 0 {
		s.logger.Info("Cut off from the other speakers: answering for no address until the heartbeats or the fallback say who owns what")
	}
	p := &plans{
		in: in, l2: plan, notAnnounced: notAnnounced, answer: want,
		bgp: bgp, peers: peers, node: in.nodes[s.cfg.Node],
		conditions: md == modeHeartbeats || md == modeFallback,
		viaLeases:  md == modeFallback,
		candidates: conditionWriters(s.cfg.Node, view, alive, s.leases.nodes()),
		degraded:   degradedNote(s.cfg.Node, md, view, leases, s.port()),
	}
	var errs []error
	for _, a := range s.announcers() {
		if err := a.Apply(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	// An interface that could not be opened is no longer offered to the
	// others: its addresses go to another node.
	if s.refreshInfo() {
		s.queue.Add(syncKey)
	}
	return errors.Join(errs...)
}

func (s *Speaker) port() uint16 { return cmp.Or(s.cfg.PeerPort, member.DefaultPort) }

// l2Members are the nodes that take part in the heartbeats, with the
// address their speaker listens on: those that may announce for some L2
// pool and have an InternalIP of this node's family.
func (s *Speaker) l2Members() map[string]netip.AddrPort {
	var nodes []*v1.Node
	for _, obj := range s.nodes.GetStore().List() {
		nodes = append(nodes, obj.(*v1.Node))
	}
	members := map[string]netip.AddrPort{}
	for _, n := range l2Candidates(nodes, s.poolList()) {
		if ip := internalIP(n, s.myIP); ip.IsValid() {
			members[n.Name] = netip.AddrPortFrom(ip, s.port())
		}
	}
	return members
}
