package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/speaker/bfd"
)

// timeNow is time.Now; a variable for tests.
var timeNow = time.Now

// placeholderASN is GoBGP's global AS. Every session sets its own local
// AS, so this number never reaches a router; GoBGP only requires one to
// start. It is from the RFC 6996 private range.
const placeholderASN = 4200000000

// shutdownTimeout bounds Shutdown when its context has no earlier deadline.
const shutdownTimeout = 10 * time.Second

// vrfASN is the administrator part of the internal route distinguishers and
// route targets of the peers' tables. They never leave the process (see
// Manager), so the reserved AS 65535 cannot clash with anything real.
const vrfASN = 65535

// Config configures a Manager.
type Config struct {
	// RouterID is the BGP identifier, an IPv4 address (also on IPv6-only
	// nodes, where any unique 32-bit value written as IPv4 will do).
	RouterID netip.Addr
	// ListenPort is the port to accept sessions on. 0 or -1, the default,
	// does not listen: the node always connects to its routers.
	ListenPort int32
	// Logger receives the Manager's and GoBGP's logs.
	Logger klog.Logger
	// BFD runs the BFD sessions peers ask for (Peer.BFD); nil refuses them.
	BFD *bfd.Mux
}

// Manager keeps one GoBGP server's sessions and announcements equal to
// what it is told by SetPeers and SetRoutes.
//
// Each peer gets its own GoBGP VRF (table) and the session is bound to it;
// a route is added to the table of every peer it lists, and only to those.
// GoBGP advertises a VRF-bound session nothing but its own table, so which
// peer gets which route is decided by where the route is put rather than
// by export policies, and changing a route's peers is an add to, or a
// withdrawal from, only the peers concerned. (GoBGP's soft reset out, which
// a policy-based filter would need after a prefix set changes, re-sends what
// now passes but never withdraws what no longer does.) The tables' route
// distinguishers and targets are internal: the sessions carry plain IPv4
// and IPv6 unicast, from which GoBGP strips the route targets.
type Manager struct {
	logger  klog.Logger
	server  *server.BgpServer
	changes chan struct{}

	sessions  *sessions
	bfd       *bfdSessions // nil without Config.BFD
	stopWatch context.CancelFunc

	// mu serializes SetPeers, SetRoutes and Shutdown, and guards the
	// fields below.
	mu     sync.Mutex
	peers  map[string]*peerEntry
	routes map[netip.Prefix]route // desired, by prefix
	closed bool
	// tableSeq numbers the peers' tables.
	tableSeq int
}

// peerEntry is one configured session and what its table holds.
type peerEntry struct {
	cfg   peerConfig
	vrf   string
	index uint32 // route distinguisher and target number of its table
	// sent are the routes in the peer's table: what GoBGP advertises to
	// it once the session is established.
	sent map[netip.Prefix]route
}

// New starts a GoBGP server without peers or routes.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	id := cfg.RouterID.Unmap()
	if !id.Is4() || id.IsUnspecified() {
		return nil, fmt.Errorf("router ID %q is not a non-zero IPv4 address", cfg.RouterID)
	}
	port := cfg.ListenPort
	if port == 0 {
		port = -1
	}
	if port < -1 || port > 65535 {
		return nil, fmt.Errorf("listen port %d out of range", cfg.ListenPort)
	}
	m := &Manager{
		logger:  cfg.Logger,
		changes: make(chan struct{}, 1),
		peers:   map[string]*peerEntry{},
		routes:  map[netip.Prefix]route{},
	}
	m.sessions = &sessions{logger: cfg.Logger, changed: m.signal, byAddr: map[netip.Addr]*session{}}
	if cfg.BFD != nil {
		m.bfd = newBFDSessions(cfg.BFD, cfg.Logger.WithName("bfd"), m.resetPeer, m.signal)
	}
	m.server = server.NewBgpServer(server.LoggerOption(&gobgpLogger{logger: cfg.Logger.WithName("gobgp"), observe: m.sessions.observeLog}))
	// Serve is GoBGP's event loop. It has no way to stop; after Shutdown
	// it idles.
	go m.server.Serve()

	err := m.server.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        placeholderASN,
		RouterId:   id.String(),
		ListenPort: port,
	}})
	if err != nil {
		return nil, fmt.Errorf("starting the BGP server: %w", err)
	}
	if err := m.rejectReceivedRoutes(ctx); err != nil {
		m.stopServer(ctx)
		return nil, err
	}
	watchCtx, cancel := context.WithCancel(context.Background())
	m.stopWatch = cancel
	err = m.server.WatchEvent(watchCtx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, m.sessions.peerEvent)
	if err != nil {
		cancel()
		m.stopServer(ctx)
		return nil, fmt.Errorf("watching BGP session states: %w", err)
	}
	m.logger.Info("BGP speaker started", "routerID", id, "listenPort", port)
	return m, nil
}

// rejectReceivedRoutes installs a global import policy that rejects every
// route a router sends. The speaker only announces; a received route would
// cost memory and, worse, land in the receiving peer's table next to the
// node's own route for the same prefix (routers echo a node's routes back
// over its other sessions). When the node's route is then withdrawn, the
// received one takes over and GoBGP withdraws the node's route in its
// internal VPN form, which the router ignores: the route would stay.
// Locally added routes have no neighbor and do not match the policy.
func (m *Manager) rejectReceivedRoutes(ctx context.Context) error {
	const set, policy = "ironlb-any-router", "ironlb-reject-received"
	err := m.server.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: []string{"0.0.0.0/0", "::/0"},
	}})
	if err == nil {
		err = m.server.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: []*api.Statement{{
			Name:       policy,
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
		}}}})
	}
	if err == nil {
		err = m.server.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_IMPORT,
			Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ACCEPT,
		}})
	}
	if err != nil {
		return fmt.Errorf("installing the import policy: %w", err)
	}
	return nil
}

// Changes signals, coalesced, that a session's state or last error changed.
// Call Status for the new state.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

func (m *Manager) signal() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

var errShutdown = errors.New("the BGP speaker is shut down")

// SetPeers makes the sessions exactly peers: new peers are added, missing
// ones deleted (with a Cease NOTIFICATION), and a peer whose configuration
// changed is replaced — only that one. A peer given unchanged is never
// touched. A peer that is invalid (or repeats another's name or address)
// is reported in the error and otherwise ignored; if a session of that name
// exists, it stays as it is. Errors name the peer.
func (m *Manager) SetPeers(ctx context.Context, peers []Peer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errShutdown
	}
	desired, errs := m.desiredPeers(peers)

	current := make(map[string]peerConfig, len(m.peers))
	for name, p := range m.peers {
		current[name] = p.cfg
	}
	changes := diffPeers(current, desired)
	stuck := map[string]bool{} // still configured in GoBGP as they were
	for _, name := range changes.remove {
		if err := m.removePeer(ctx, m.peers[name]); err != nil {
			errs = append(errs, &PeerError{Peer: name, Err: err})
			stuck[name] = true
		}
	}
	for _, cfg := range changes.add {
		if stuck[cfg.name] {
			continue
		}
		if err := m.addPeer(ctx, cfg); err != nil {
			errs = append(errs, &PeerError{Peer: cfg.name, Err: err})
		}
	}
	errs = append(errs, m.setBFD(ctx, peers, desired)...)
	return errors.Join(errs...)
}

// setBFD runs a BFD session for each desired peer that asks for one.
func (m *Manager) setBFD(ctx context.Context, peers []Peer, desired map[string]peerConfig) []error {
	var errs []error
	want := map[string]bfdWant{}
	for _, p := range peers {
		cfg, ok := desired[p.Name]
		if !ok || !p.BFD.Enabled {
			continue
		}
		if m.bfd == nil {
			errs = append(errs, &PeerError{Peer: p.Name, Err: fmt.Errorf("peer %s: BFD is not available in this speaker", p.Name)})
			continue
		}
		want[p.Name] = bfdWant{peer: cfg.address, multihop: cfg.multihop, settings: p.BFD}
	}
	if m.bfd != nil {
		m.bfd.set(ctx, want)
	}
	return errs
}

// resetPeer closes the session with peer at once (BFD found the path
// down); GoBGP connects again as its timers say.
func (m *Manager) resetPeer(peer netip.Addr, why string) {
	m.sessions.setError(peer, why)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.server.ResetPeer(ctx, &api.ResetPeerRequest{Address: peer.String(), Communication: why}); err != nil {
		m.logger.Error(err, "Resetting a BGP session after BFD went down", "peerAddress", peer)
		return
	}
	m.logger.Info("Reset the BGP session: BFD found the path down", "peerAddress", peer, "why", why)
}

// PeerError is what went wrong with one peer in SetPeers, which joins one
// per peer (errors.Join): the other peers were set as asked.
type PeerError struct {
	Peer string
	Err  error
}

func (e *PeerError) Error() string { return e.Err.Error() }
func (e *PeerError) Unwrap() error { return e.Err }

// desiredPeers validates peers. An invalid peer whose name is configured
// keeps its current configuration.
func (m *Manager) desiredPeers(peers []Peer) (map[string]peerConfig, []error) {
	var errs []error
	desired := make(map[string]peerConfig, len(peers))
	byAddr := map[netip.Addr]string{}
	keep := func(name string) {
		if cur, ok := m.peers[name]; ok {
			if other, taken := byAddr[cur.cfg.address]; !taken || other == name {
				desired[name] = cur.cfg
				byAddr[cur.cfg.address] = name
			}
		}
	}
	var invalid []string
	// Sorted by name, so that which of two peers with one address wins
	// does not depend on the caller's order.
	sorted := slices.Clone(peers)
	slices.SortStableFunc(sorted, func(a, b Peer) int { return compareStrings(a.Name, b.Name) })
	for _, p := range sorted {
		cfg, err := validatePeer(p)
		switch {
		case err != nil:
			errs = append(errs, err)
		case hasKey(desired, p.Name):
			err = fmt.Errorf("peer %s: given twice", p.Name)
			errs = append(errs, err)
		case byAddr[cfg.address] != "":
			err = fmt.Errorf("peer %s: address %s is already peer %s's (one session per router address)", p.Name, cfg.address, byAddr[cfg.address])
			errs = append(errs, err)
		default:
			desired[p.Name] = cfg
			byAddr[cfg.address] = p.Name
		}
		if err != nil {
			errs[len(errs)-1] = &PeerError{Peer: p.Name, Err: err}
			if p.Name != "" {
				invalid = append(invalid, p.Name)
			}
		}
	}
	for _, name := range invalid {
		if _, ok := desired[name]; !ok {
			keep(name)
		}
	}
	return desired, errs
}

// addPeer creates the peer's table, fills it with the peer's routes, and
// then configures the session, so that the first UPDATEs already carry
// every route.
func (m *Manager) addPeer(ctx context.Context, cfg peerConfig) error {
	// A fresh table name for every session, so that a table left behind
	// by a failed deletion never blocks the peer's return.
	m.tableSeq++
	p := &peerEntry{cfg: cfg, vrf: fmt.Sprintf("%s#%d", cfg.name, m.tableSeq), index: m.freeIndex(), sent: map[netip.Prefix]route{}}
	rd, err := anypb.New(&api.RouteDistinguisherTwoOctetASN{Admin: vrfASN, Assigned: p.index})
	if err != nil {
		return fmt.Errorf("peer %s: %w", cfg.name, err)
	}
	rt, err := anypb.New(&api.TwoOctetAsSpecificExtended{IsTransitive: true, SubType: 0x02, Asn: vrfASN, LocalAdmin: p.index})
	if err != nil {
		return fmt.Errorf("peer %s: %w", cfg.name, err)
	}
	err = m.server.AddVrf(ctx, &api.AddVrfRequest{Vrf: &api.Vrf{
		Name: p.vrf, Rd: rd, ImportRt: []*anypb.Any{rt}, ExportRt: []*anypb.Any{rt},
	}})
	if err != nil {
		return fmt.Errorf("peer %s: creating its table: %w", cfg.name, err)
	}
	m.peers[cfg.name] = p
	routeErr := m.syncPeerRoutes(ctx, p)

	m.sessions.add(cfg.address, cfg)
	if err := m.server.AddPeer(ctx, &api.AddPeerRequest{Peer: cfg.apiPeer(p.vrf)}); err != nil {
		m.sessions.remove(cfg.address)
		delete(m.peers, cfg.name)
		if derr := m.server.DeleteVrf(ctx, &api.DeleteVrfRequest{Name: p.vrf}); derr != nil {
			m.logger.Error(derr, "Deleting the table of a peer that could not be added", "peer", cfg.name)
		}
		return fmt.Errorf("peer %s: adding the session: %w", cfg.name, err)
	}
	m.logger.Info("Added BGP peer", "peer", cfg.name, "address", cfg.address, "asn", cfg.asn, "localASN", cfg.localASN, "routes", len(p.sent))
	m.signal()
	return routeErr
}

// removePeer deletes the session (GoBGP sends a Cease NOTIFICATION, "peer
// de-configured") and then its table.
func (m *Manager) removePeer(ctx context.Context, p *peerEntry) error {
	err := m.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.cfg.address.String()})
	if err != nil {
		return fmt.Errorf("peer %s: deleting the session: %w", p.cfg.name, err)
	}
	m.sessions.remove(p.cfg.address)
	delete(m.peers, p.cfg.name)
	if err := m.server.DeleteVrf(ctx, &api.DeleteVrfRequest{Name: p.vrf}); err != nil {
		// The session is gone; a stale table only costs memory.
		m.logger.Error(err, "Deleting the table of a removed peer", "peer", p.cfg.name)
	}
	m.logger.Info("Removed BGP peer", "peer", p.cfg.name, "address", p.cfg.address)
	m.signal()
	return nil
}

// freeIndex is the lowest table number no peer uses.
func (m *Manager) freeIndex() uint32 {
	used := map[uint32]bool{}
	for _, p := range m.peers {
		used[p.index] = true
	}
	i := uint32(1)
	for used[i] {
		i++
	}
	return i
}

// SetRoutes makes the announcements exactly routes. Only what differs is
// sent: a new or changed route is one UPDATE to each of its peers, a
// removed one a withdrawal, and a route whose Peers change is announced to
// the added peers and withdrawn from the removed ones only. An invalid
// route (or a second route for a prefix) is reported in the error; an
// announcement already made for its prefix stays as it is.
func (m *Manager) SetRoutes(ctx context.Context, routes []Route) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errShutdown
	}
	var errs []error
	desired := make(map[netip.Prefix]route, len(routes))
	var invalid []netip.Prefix
	for _, r := range routes {
		v, err := validateRoute(r)
		if err == nil {
			if _, dup := desired[v.prefix]; dup {
				err = fmt.Errorf("prefix %s: given twice", v.prefix)
			}
		}
		if err != nil {
			errs = append(errs, err)
			if pfx, perr := normalizePrefix(r.Prefix); perr == nil {
				invalid = append(invalid, pfx)
			}
			continue
		}
		desired[v.prefix] = v
	}
	for _, pfx := range invalid {
		if old, ok := m.routes[pfx]; ok {
			desired[pfx] = old
		}
	}
	m.routes = desired
	for _, name := range sortedKeys(m.peers) {
		if err := m.syncPeerRoutes(ctx, m.peers[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// routeChanges is what a peer's table needs to hold the desired routes.
type routeChanges struct {
	announce []route        // new or changed
	withdraw []netip.Prefix // no longer for this peer
}

// diffRoutes compares what a peer's table holds with the desired routes
// and picks those for peer. Unchanged routes are in neither list.
func diffRoutes(peer string, sent, desired map[netip.Prefix]route) routeChanges {
	var ch routeChanges
	for pfx, r := range desired {
		if !slices.Contains(r.peers, peer) {
			continue
		}
		if old, ok := sent[pfx]; !ok || !sameAnnouncement(old, r) {
			ch.announce = append(ch.announce, r)
		}
	}
	for pfx := range sent {
		if r, ok := desired[pfx]; !ok || !slices.Contains(r.peers, peer) {
			ch.withdraw = append(ch.withdraw, pfx)
		}
	}
	slices.SortFunc(ch.announce, func(a, b route) int { return comparePrefixes(a.prefix, b.prefix) })
	slices.SortFunc(ch.withdraw, comparePrefixes)
	return ch
}

// syncPeerRoutes brings the peer's table to the desired routes. A route
// that fails is reported and left as it was; the next call retries it.
func (m *Manager) syncPeerRoutes(ctx context.Context, p *peerEntry) error {
	ch := diffRoutes(p.cfg.name, p.sent, m.routes)
	var errs []error
	for _, r := range ch.announce {
		path, err := r.apiPath()
		if err == nil {
			_, err = m.server.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_VRF, VrfId: p.vrf, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: announcing %s: %w", p.cfg.name, r.prefix, err))
			continue
		}
		p.sent[r.prefix] = r
		m.logger.V(2).Info("Announced route", "peer", p.cfg.name, "prefix", r.prefix, "nextHop", r.nextHop)
	}
	for _, pfx := range ch.withdraw {
		if err := m.withdraw(ctx, p, pfx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// withdraw removes a route from the peer's table; GoBGP sends the
// withdrawal if the session is established.
func (m *Manager) withdraw(ctx context.Context, p *peerEntry, pfx netip.Prefix) error {
	r := p.sent[pfx]
	path, err := r.apiPath()
	if err == nil {
		path.IsWithdraw = true
		err = m.server.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_VRF, VrfId: p.vrf, Family: r.family(), Path: path})
	}
	if err != nil {
		return fmt.Errorf("peer %s: withdrawing %s: %w", p.cfg.name, pfx, err)
	}
	delete(p.sent, pfx)
	m.logger.V(2).Info("Withdrew route", "peer", p.cfg.name, "prefix", pfx)
	return nil
}

// Shutdown stops the speaker. A peer without graceful restart has every
// route withdrawn, then (after every BFD session has said AdminDown, so
// that no router takes the stop for a forwarding failure, RFC 5882 §3.2)
// its session closed with a Cease NOTIFICATION (administrative shutdown);
// the withdrawals are queued before the NOTIFICATION. A peer with graceful
// restart keeps this node's routes: nothing is withdrawn and no
// NOTIFICATION sent, and its session ends without one when the process
// exits, which the router takes for a restart (RFC 4724): it goes on
// forwarding to this node, whose kube-proxy does not stop with the speaker,
// until the next speaker has re-established the session and sent the routes
// again, or gracefulRestartTime passes. So a rolling restart changes no
// router's next hops. It returns when the server stopped (or, with a
// graceful restart peer, when the other sessions are closed) or, at the
// latest, when ctx ends or 10 seconds passed. The Manager cannot be used
// afterwards.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	var closing, kept []*peerEntry
	for _, name := range sortedKeys(m.peers) {
		if p := m.peers[name]; p.cfg.gracefulRestart {
			kept = append(kept, p)
		} else {
			closing = append(closing, p)
		}
	}
	m.logger.Info("BGP speaker shutting down", "peers", len(m.peers), "keptForGracefulRestart", len(kept))

	for _, p := range closing {
		for _, pfx := range sortedPrefixes(p.sent) {
			if err := m.withdraw(ctx, p, pfx); err != nil {
				m.logger.Error(err, "Withdrawing on shutdown")
			}
		}
	}
	if m.bfd != nil {
		m.bfd.shutdown(ctx)
	}
	for _, p := range closing {
		err := m.server.DisablePeer(ctx, &api.DisablePeerRequest{Address: p.cfg.address.String(), Communication: "ironlb speaker shutting down"})
		if err != nil {
			m.logger.Error(err, "Closing a BGP session on shutdown", "peer", p.cfg.name)
		}
	}
	// Wait for the NOTIFICATIONs to go out before the sessions are torn
	// down without one.
	m.waitDown(ctx, closing)
	if len(kept) > 0 {
		// Stopping GoBGP would send them a Cease.
		m.stopWatch()
		m.logger.Info("BGP speaker stopped; sessions with graceful restart end with the process, the routers keep the routes", "peers", len(kept))
		return
	}
	m.stopServer(ctx)
	m.stopWatch()
	m.logger.Info("BGP speaker stopped")
}

// waitDown waits until none of peers' sessions is established, or ctx ends.
func (m *Manager) waitDown(ctx context.Context, peers []*peerEntry) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		up := 0
		for _, p := range peers {
			if s, ok := m.sessions.get(p.cfg.address); ok && s.state == StateEstablished {
				up++
			}
		}
		if up == 0 {
			return
		}
		select {
		case <-ctx.Done():
			m.logger.Info("Sessions still established when the shutdown wait ended", "established", up)
			return
		case <-tick.C:
		}
	}
}

// stopServer stops GoBGP, bounded by ctx: StopBgp waits for every
// session's goroutines.
func (m *Manager) stopServer(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.server.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
			m.logger.Error(err, "Stopping the BGP server")
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.logger.Error(ctx.Err(), "The BGP server did not stop in time; leaving it")
	}
}
