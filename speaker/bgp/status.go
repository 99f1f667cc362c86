package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"k8s.io/klog/v2"
)

// Session states, as RFC 4271 names them.
const (
	StateIdle        = "Idle"
	StateConnect     = "Connect"
	StateActive      = "Active"
	StateOpenSent    = "OpenSent"
	StateOpenConfirm = "OpenConfirm"
	StateEstablished = "Established"
)

// PeerStatus is the state of one session.
type PeerStatus struct {
	// State is the BGP FSM state: Idle, Connect, Active, OpenSent,
	// OpenConfirm or Established.
	State string
	// Since is when the session entered State (or was configured).
	Since time.Time
	// Advertised is the number of prefixes currently announced to the
	// peer (0 unless Established); Received the number the peer sent,
	// which the speaker stores but does not use.
	Advertised, Received uint32
	// UpdatesSent counts the UPDATE messages sent on the session.
	UpdatesSent uint64
	// LastError says, in words, why the session last failed or went down:
	// the NOTIFICATION either side sent, a hold timer expiry, a refused or
	// timed-out connection. It is cleared when the session is established.
	LastError string
	// BFD is the peer's BFD session; nil when it has none.
	BFD *BFDStatus
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return StateIdle
	case api.PeerState_CONNECT:
		return StateConnect
	case api.PeerState_ACTIVE:
		return StateActive
	case api.PeerState_OPENSENT:
		return StateOpenSent
	case api.PeerState_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}

// session is what the Manager tracks of one configured peer beyond what
// GoBGP's API returns: since when it is in its state, and why it failed.
type session struct {
	name      string
	localASN  uint32
	password  bool // a wrong TCP MD5 password shows as a connect timeout
	state     string
	since     time.Time
	lastError string
	// explained is set once the current connection attempt's failure has
	// a reason, so that a vaguer one GoBGP logs later does not replace it.
	explained bool
}

// sessions tracks sessions by peer address, the key GoBGP uses in its
// events and log lines. It has its own lock because GoBGP calls into it
// from its goroutines (the log adapter, the event watcher), and those must
// never wait for a Manager operation that itself waits for GoBGP.
type sessions struct {
	logger  klog.Logger
	changed func() // signals Changes()

	mu     sync.Mutex
	byAddr map[netip.Addr]*session
}

func (s *sessions) add(addr netip.Addr, cfg peerConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byAddr[addr] = &session{name: cfg.name, localASN: cfg.localASN, password: cfg.password != "", state: StateIdle, since: timeNow()}
}

func (s *sessions) remove(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byAddr, addr)
}

// setState records a state GoBGP reported for addr.
func (s *sessions) setState(addr netip.Addr, state string) { s.update(addr, state, nil) }

// reconcile sets the state GoBGP listed for addr, unless the session's
// state changed since seenSince: then the listing may be the older news.
func (s *sessions) reconcile(addr netip.Addr, listed string, seenSince time.Time) {
	s.update(addr, listed, &seenSince)
}

func (s *sessions) update(addr netip.Addr, state string, unlessChangedSince *time.Time) {
	s.mu.Lock()
	sess, ok := s.byAddr[addr]
	if !ok || sess.state == state || unlessChangedSince != nil && !sess.since.Equal(*unlessChangedSince) {
		s.mu.Unlock()
		return
	}
	old := sess.state
	sess.state, sess.since = state, timeNow()
	if state == StateEstablished {
		sess.lastError = ""
	}
	name, lastError := sess.name, sess.lastError
	s.mu.Unlock()

	// Coming up and going down matter to an operator; the Idle/Active
	// cycle of a session that cannot connect would only repeat itself.
	v := 2
	if state == StateEstablished || old == StateEstablished {
		v = 0
	}
	s.logger.V(v).Info("BGP session state changed", "peer", name, "peerAddress", addr, "from", old, "to", state, "lastError", lastError)
	s.changed()
}

// setError records why the session at addr failed.
func (s *sessions) setError(addr netip.Addr, msg string) {
	s.mu.Lock()
	sess, ok := s.byAddr[addr]
	if !ok {
		s.mu.Unlock()
		return
	}
	sess.explained = true
	if sess.lastError == msg {
		s.mu.Unlock()
		return
	}
	sess.lastError = msg
	name := sess.name
	s.mu.Unlock()
	s.logger.Info("BGP session error", "peer", name, "peerAddress", addr, "error", msg)
	s.changed()
}

// snapshot returns when each session entered its state.
func (s *sessions) snapshot() map[netip.Addr]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	since := make(map[netip.Addr]time.Time, len(s.byAddr))
	for addr, sess := range s.byAddr {
		since[addr] = sess.since
	}
	return since
}

func (s *sessions) get(addr netip.Addr) (session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.byAddr[addr]
	if !ok {
		return session{}, false
	}
	return *sess, true
}

func (s *sessions) hasPassword(addr netip.Addr) bool {
	sess, ok := s.get(addr)
	return ok && sess.password
}

// peerEvent handles GoBGP's peer state events.
func (s *sessions) peerEvent(r *api.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.GetPeer().GetState() == nil {
		return
	}
	st := ev.GetPeer().GetState()
	addr, err := netip.ParseAddr(st.GetNeighborAddress())
	if err != nil {
		return
	}
	s.setState(addr.Unmap(), stateName(st.GetSessionState()))
}

// observeLog picks the reason a session failed out of GoBGP's log lines.
// The messages and fields are GoBGP's (pkg/server/fsm.go); the real-router
// tests check that the reasons still arrive.
func (s *sessions) observeLog(msg string, fields gobgplog.Fields) {
	key, _ := fields["Key"].(string)
	if key == "" {
		return
	}
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	addr = addr.Unmap()
	var reason string
	switch msg {
	case "received notification":
		reason = "received NOTIFICATION from the peer: " + notificationText(fields)
	case "sent notification":
		reason = "sent NOTIFICATION to the peer: " + notificationText(fields)
	case "hold timer expired":
		reason = "hold timer expired: nothing received from the peer within the hold time"
	case "failed to connect":
		reason = connectErrorText(fields["Error"], s.hasPassword(addr))
	case "state changed":
		reason = s.stateChangeReason(addr, fields)
	}
	if reason != "" {
		s.setError(addr, reason)
	}
}

// stateChangeReason explains the failures GoBGP logs only as a state
// change: a connection that breaks without a NOTIFICATION, and a
// NOTIFICATION received before the session is established, which GoBGP
// reads but neither logs nor reports (only "invalid-msg").
func (s *sessions) stateChangeReason(addr netip.Addr, fields gobgplog.Fields) string {
	oldState, _ := fields["old"].(string)
	newState, _ := fields["new"].(string)
	r, _ := fields["reason"].(fmt.Stringer)
	why := ""
	if r != nil {
		why = safeString(r)
	}

	s.mu.Lock()
	sess, ok := s.byAddr[addr]
	if !ok {
		s.mu.Unlock()
		return ""
	}
	if newState == "BGP_FSM_OPENSENT" {
		sess.explained = false // a new connection
	}
	explained, localASN := sess.explained, sess.localASN
	s.mu.Unlock()

	if newState != "BGP_FSM_IDLE" || explained {
		return ""
	}
	switch why {
	case "read-failed":
		return "connection closed by the peer without a NOTIFICATION"
	case "write-failed":
		return "connection lost: could not write to the peer"
	case "invalid-msg":
		if oldState == "BGP_FSM_OPENSENT" || oldState == "BGP_FSM_OPENCONFIRM" {
			// The router's own OPEN, if it came, was acceptable: what it
			// objects to is this node's OPEN.
			return fmt.Sprintf("the router closed the session during the OPEN exchange with a message GoBGP does not report, "+
				"normally a NOTIFICATION rejecting this node's OPEN: check that the router expects AS %d from this node "+
				"(bad peer AS), and this node's router ID and hold time", localASN)
		}
	}
	return ""
}

// connectErrorText explains a failed connection attempt.
func connectErrorText(v any, password bool) string {
	err, _ := v.(error)
	if err == nil {
		return fmt.Sprintf("cannot connect: %v", v)
	}
	text := "cannot connect: " + err.Error()
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		if password {
			// Linux drops a SYN whose MD5 signature does not verify
			// without an answer; a timeout is all this side ever sees.
			text += " (no answer: check that the TCP MD5 password matches the router's, or whether a firewall drops the connection)"
		} else {
			text += " (no answer: is the router configured for this peer, and does a firewall drop the connection?)"
		}
	}
	return text
}

// notificationText describes the NOTIFICATION in GoBGP's log fields: Code,
// Subcode and an administrative communication, or Data holding a
// *bgp.MessageError.
func notificationText(fields gobgplog.Fields) string {
	code, okCode := fields["Code"].(uint8)
	subcode, _ := fields["Subcode"].(uint8)
	detail := ""
	if !okCode {
		if e, ok := fields["Data"].(*bgp.MessageError); ok {
			code, subcode, okCode, detail = e.TypeCode, e.SubTypeCode, true, e.Message
		}
	}
	if !okCode {
		return "unknown error"
	}
	text := describeNotification(code, subcode)
	if detail != "" {
		text += ": " + detail
	}
	if c, _ := fields["Communicated-Reason"].(string); c != "" {
		text += fmt.Sprintf(" (%q)", c)
	}
	return text
}

// notificationNames are the RFC 4271 error codes and the subcodes of RFC
// 4271, 4486, 8538, 9234 and 9384 as the RFCs spell them.
var notificationNames = map[uint8]struct {
	name     string
	subcodes map[uint8]string
}{
	bgp.BGP_ERROR_MESSAGE_HEADER_ERROR: {"Message Header Error", map[uint8]string{
		1: "Connection Not Synchronized", 2: "Bad Message Length", 3: "Bad Message Type"}},
	bgp.BGP_ERROR_OPEN_MESSAGE_ERROR: {"OPEN Message Error", map[uint8]string{
		1: "Unsupported Version Number", 2: "Bad Peer AS", 3: "Bad BGP Identifier",
		4: "Unsupported Optional Parameter", 5: "Authentication Failure", 6: "Unacceptable Hold Time",
		7: "Unsupported Capability", 11: "Role Mismatch"}},
	bgp.BGP_ERROR_UPDATE_MESSAGE_ERROR: {"UPDATE Message Error", map[uint8]string{
		1: "Malformed Attribute List", 2: "Unrecognized Well-known Attribute", 3: "Missing Well-known Attribute",
		4: "Attribute Flags Error", 5: "Attribute Length Error", 6: "Invalid ORIGIN Attribute",
		8: "Invalid NEXT_HOP Attribute", 9: "Optional Attribute Error", 10: "Invalid Network Field",
		11: "Malformed AS_PATH"}},
	bgp.BGP_ERROR_HOLD_TIMER_EXPIRED: {"Hold Timer Expired", nil},
	bgp.BGP_ERROR_FSM_ERROR: {"Finite State Machine Error", map[uint8]string{
		1: "Unexpected Message in OpenSent State", 2: "Unexpected Message in OpenConfirm State",
		3: "Unexpected Message in Established State"}},
	bgp.BGP_ERROR_CEASE: {"Cease", map[uint8]string{
		1: "Maximum Number of Prefixes Reached", 2: "Administrative Shutdown", 3: "Peer De-configured",
		4: "Administrative Reset", 5: "Connection Rejected", 6: "Other Configuration Change",
		7: "Connection Collision Resolution", 8: "Out of Resources", 9: "Hard Reset", 10: "BFD Down"}},
	bgp.BGP_ERROR_ROUTE_REFRESH_MESSAGE_ERROR: {"ROUTE-REFRESH Message Error", map[uint8]string{
		1: "Invalid Message Length"}},
}

// describeNotification names a NOTIFICATION's code and subcode, e.g.
// "OPEN Message Error / Bad Peer AS".
func describeNotification(code, subcode uint8) string {
	c, ok := notificationNames[code]
	if !ok {
		return fmt.Sprintf("error code %d, subcode %d", code, subcode)
	}
	if subcode == 0 {
		return c.name
	}
	if s, ok := c.subcodes[subcode]; ok {
		return c.name + " / " + s
	}
	return fmt.Sprintf("%s / subcode %d", c.name, subcode)
}

// Status returns the state of every configured peer by name. The state
// and its time come from GoBGP's events, as do the Changes() signals, so a
// caller woken by Changes sees the state that woke it; the counters come
// from GoBGP's tables.
func (m *Manager) Status(ctx context.Context) map[string]PeerStatus {
	type listed struct {
		state    string
		received uint64
		updates  uint64
	}
	seen := m.sessions.snapshot()
	fromGoBGP := map[netip.Addr]listed{}
	err := m.server.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		l := listed{state: stateName(p.GetState().GetSessionState()), updates: p.GetState().GetMessages().GetSent().GetUpdate()}
		for _, a := range p.GetAfiSafis() {
			l.received += a.GetState().GetReceived()
		}
		fromGoBGP[addr.Unmap()] = l
	})
	if err != nil {
		m.logger.Error(err, "Listing BGP peers for their status")
	}

	m.mu.Lock()
	addrs := make(map[string]netip.Addr, len(m.peers))
	for name, p := range m.peers {
		addrs[name] = p.cfg.address
	}
	m.mu.Unlock()

	var bfdStatus map[string]BFDStatus
	if m.bfd != nil {
		bfdStatus = m.bfd.status()
	}
	out := make(map[string]PeerStatus, len(addrs))
	for name, addr := range addrs {
		// An event still on its way, or one lost to a replaced session at
		// the same address: GoBGP's own state wins, unless an event came
		// in while GoBGP was asked.
		if l, ok := fromGoBGP[addr]; ok {
			m.sessions.reconcile(addr, l.state, seen[addr])
		}
		sess, ok := m.sessions.get(addr)
		if !ok {
			continue
		}
		st := PeerStatus{State: sess.state, Since: sess.since, LastError: sess.lastError}
		st.Received = clampUint32(fromGoBGP[addr].received)
		st.UpdatesSent = fromGoBGP[addr].updates
		if sess.state == StateEstablished {
			st.Advertised = m.advertised(ctx, addr)
		}
		if b, ok := bfdStatus[name]; ok {
			st.BFD = &b
		}
		out[name] = st
	}
	return out
}

// advertised counts the prefixes in the peer's Adj-RIB-Out. (ListPeer's
// own count includes End-of-RIB markers and counts for peers that are
// down.)
func (m *Manager) advertised(ctx context.Context, addr netip.Addr) uint32 {
	var n uint64
	for _, f := range families {
		t, err := m.server.GetTable(ctx, &api.GetTableRequest{TableType: api.TableType_ADJ_OUT, Family: f, Name: addr.String()})
		if err != nil { // the peer was just removed
			m.logger.V(2).Info("Reading a peer's Adj-RIB-Out", "peerAddress", addr, "err", err)
			continue
		}
		n += t.GetNumDestination()
	}
	return clampUint32(n)
}

func clampUint32(v uint64) uint32 {
	if v > uint64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(v)
}
