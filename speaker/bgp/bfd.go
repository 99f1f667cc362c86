package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/speaker/bfd"
)

// BFD asks for a BFD session beside a peer's BGP session: when BFD finds
// the path down, the BGP session is reset at once instead of at the end of
// its hold time. The router, running BFD towards the node, does the same on
// its side when the node dies.
type BFD struct {
	// Enabled runs the session; the other fields are then used.
	Enabled bool
	// Local is this node's address towards the peer.
	Local netip.Addr
	// MinRx, MinTx and Multiplier are the session's timers; 0 takes the
	// defaults of package bfd (300 ms, 300 ms, 3).
	MinRx, MinTx time.Duration
	Multiplier   uint8
}

// BFDStatus is the state of a peer's BFD session.
type BFDStatus struct {
	State string // AdminDown, Down, Init or Up
	Since time.Time
	// Message says why the session is not up, or why it last went down.
	Message string
}

// bfdWant is one BFD session as SetPeers wants it.
type bfdWant struct {
	peer     netip.Addr
	multihop bool
	settings BFD
}

func (w bfdWant) config() bfd.Config {
	return bfd.Config{Local: w.settings.Local, Peer: w.peer, Multihop: w.multihop,
		MinRx: w.settings.MinRx, MinTx: w.settings.MinTx, Multiplier: w.settings.Multiplier}
}

// sameSession reports whether a session running for w can serve x: only
// the timers differ, and those change with a Poll, not a new session.
func (w bfdWant) sameSession(x bfdWant) bool {
	return w.peer == x.peer && w.multihop == x.multihop && w.settings.Local == x.settings.Local
}

// bfdSessions runs the BFD sessions of the peers that ask for one. It owns
// them and their states; the Manager tells it which to run (set) and it
// tells the Manager when a session failed (reset) or changed (changed).
type bfdSessions struct {
	mux     *bfd.Mux
	logger  klog.Logger
	reset   func(peer netip.Addr, why string)
	changed func()

	mu   sync.Mutex
	runs map[string]*bfdRun // by peer name
}

// bfdRun is one running session.
type bfdRun struct {
	want    bfdWant
	session *bfd.Session
	cancel  context.CancelFunc
	done    chan struct{}

	// Guarded by bfdSessions.mu.
	status BFDStatus
}

func newBFDSessions(mux *bfd.Mux, logger klog.Logger, reset func(netip.Addr, string), changed func()) *bfdSessions {
	return &bfdSessions{mux: mux, logger: logger, reset: reset, changed: changed, runs: map[string]*bfdRun{}}
}

// set runs exactly the sessions of want, by peer name: a session whose
// peer, local address or hop mode changed is replaced, one whose timers
// changed polls the peer with the new ones, and a session no longer wanted
// tells the peer it is administratively down.
func (b *bfdSessions) set(ctx context.Context, want map[string]bfdWant) {
	b.mu.Lock()
	var stop []*bfdRun
	for name, r := range b.runs {
		if w, ok := want[name]; !ok || !w.sameSession(r.want) {
			stop = append(stop, r)
			delete(b.runs, name)
		}
	}
	b.mu.Unlock()
	b.shutdownAll(ctx, stop)

	b.mu.Lock()
	defer b.mu.Unlock()
	for name, w := range want {
		if r, ok := b.runs[name]; ok {
			if r.want.settings != w.settings {
				r.want = w // a session made later takes them from there
				if r.session != nil {
					r.session.SetTimers(w.settings.MinRx, w.settings.MinTx, w.settings.Multiplier)
				}
			}
			continue
		}
		b.runs[name] = b.start(name, w)
	}
}

// start begins a session with w's peer.
func (b *bfdSessions) start(name string, w bfdWant) *bfdRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &bfdRun{want: w, cancel: cancel, done: make(chan struct{}), status: BFDStatus{
		State: bfd.Down.String(), Since: time.Now(),
		Message: fmt.Sprintf("no BFD packet from %s yet: does the router run BFD for this node?", w.peer),
	}}
	go b.run(ctx, name, r)
	return r
}

// run makes and runs r's session and follows its state changes until ctx
// ends or the session is shut down. A session that cannot be made or run
// (its local address not there yet) is tried again every few seconds.
func (b *bfdSessions) run(ctx context.Context, name string, r *bfdRun) {
	defer close(r.done)
	for {
		b.mu.Lock()
		cfg := r.want.config()
		b.mu.Unlock()
		session, err := b.mux.New(cfg)
		if err == nil {
			b.mu.Lock()
			r.session = session
			b.mu.Unlock()
			follow := make(chan struct{})
			go func() {
				defer close(follow)
				for c := range session.Changes() {
					b.observe(name, r, c)
				}
			}()
			err = session.Run(ctx)
			<-follow
			if err == nil {
				return // shut down
			}
		}
		if ctx.Err() != nil {
			return
		}
		b.mu.Lock()
		r.status.Message = err.Error()
		b.mu.Unlock()
		b.logger.Error(err, "BFD session not running; trying again", "peer", name)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// observe records a state change and resets the BGP session when BFD
// found the path down: a session that was Up and went Down on its own
// (detection time expired), or because the peer said it no longer hears
// this node (failed). A peer that says it is administratively down (RFC
// 5882 §3.2) or ends its session for another reason is no failure.
func (b *bfdSessions) observe(name string, r *bfdRun, c bfd.Change) {
	b.mu.Lock()
	peer := r.want.peer
	r.status = BFDStatus{State: c.State.String(), Since: c.At, Message: bfdMessage(c, peer)}
	b.mu.Unlock()
	b.logger.Info("BFD session changed", "peer", name, "from", c.From, "to", c.State, "diag", c.Diag, "remoteAdminDown", c.RemoteAdminDown, "remoteDiag", c.RemoteDiag)
	if failed(c) {
		b.reset(peer, fmt.Sprintf("BFD down (%s)", c.Diag))
	}
	b.changed()
}

// failed reports whether a change means the path to the peer failed: the
// session was Up and went Down because the detection time expired, or
// because the peer said so for a reason that is a failure of the path
// (bfd.Diag.PathFailed). A peer that says Down for another reason is heard,
// so the path works: FRR's bfdd says Down (neighbor signaled session down)
// from the session it replaces when the router's BGP registers it again
// once the BGP session is up, and resetting BGP then would reset every
// first session with such a router.
func failed(c bfd.Change) bool {
	if c.From != bfd.Up || c.State != bfd.Down || c.RemoteAdminDown {
		return false
	}
	return c.Diag != bfd.DiagNeighborSignaledDown || c.RemoteDiag.PathFailed()
}

// bfdMessage says, for the status, why a session is where c left it.
func bfdMessage(c bfd.Change, peer netip.Addr) string {
	switch {
	case c.State == bfd.Up:
		return ""
	case c.RemoteAdminDown:
		return fmt.Sprintf("%s took the session administratively down (a planned stop, not a failure)", peer)
	case c.From == bfd.Up && !failed(c):
		return fmt.Sprintf("%s ended the session (it said Down, %s) while its packets arrive, so the path works: the BGP session was kept", peer, c.RemoteDiag)
	case c.From == bfd.Up:
		return fmt.Sprintf("went down: %s; the BGP session was reset", c.Diag)
	}
	return ""
}

// status returns the state of each peer's session.
func (b *bfdSessions) status() map[string]BFDStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]BFDStatus, len(b.runs))
	for name, r := range b.runs {
		out[name] = r.status
	}
	return out
}

// shutdown tells every peer that its session is administratively down and
// stops them: a planned stop, before the BGP sessions close.
func (b *bfdSessions) shutdown(ctx context.Context) {
	b.mu.Lock()
	runs := make([]*bfdRun, 0, len(b.runs))
	for name, r := range b.runs {
		runs = append(runs, r)
		delete(b.runs, name)
	}
	b.mu.Unlock()
	b.shutdownAll(ctx, runs)
}

// shutdownAll sends AdminDown on every run at once and waits for them.
func (b *bfdSessions) shutdownAll(ctx context.Context, runs []*bfdRun) {
	var wg sync.WaitGroup
	for _, r := range runs {
		b.mu.Lock()
		session := r.session
		b.mu.Unlock()
		wg.Go(func() {
			if session != nil {
				_ = session.Shutdown(ctx)
			}
			r.cancel()
			select {
			case <-r.done:
			case <-ctx.Done():
			}
		})
	}
	wg.Wait()
}
