package member

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// peerState is what this node learnt from a peer's own heartbeats. It stays
// after the peer goes silent, so isolation can tell "peers existed recently"
// from "there never were any"; a leaving peer's state is deleted.
type peerState struct {
	incarnation uint64
	seq         uint64
	lastHeard   time.Time
	info        map[string]string
	// relays is the heard list of the peer's latest heartbeat. It is only
	// believed while the peer itself is heard directly.
	relays []relayed
}

// relayed is a node that a peer reported hearing directly.
type relayed struct {
	node        string
	incarnation uint64
	info        map[string]string
	until       time.Time // when the report expires, on this node's clock
}

// handle processes one datagram received from the address from.
func (m *Members) handle(from netip.AddrPort, data []byte, now time.Time) {
	msg, err := decode(data)
	if err != nil {
		m.reject(reasonMalformed, from, "", err)
		return
	}
	if m.dropped(msg.Node, m.node) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if reason := m.checkLocked(from, msg); reason != "" {
		m.reject(reason, from, msg.Node, nil)
		return
	}
	heartbeatsReceived.Inc()
	if msg.Leaving {
		m.leftLocked(msg)
	} else {
		m.recordLocked(msg, now)
	}
	m.refreshLocked(now)
}

// checkLocked returns why msg must be ignored, or "" to accept it.
func (m *Members) checkLocked(from netip.AddrPort, msg *message) string {
	if msg.Node == m.node {
		return reasonSelf
	}
	addr, ok := m.peers[msg.Node]
	switch {
	case !ok:
		return reasonUnknownPeer
	case addr != from:
		return reasonWrongAddress
	case msg.Leaving:
		return "" // idempotent, and its copies share one seq
	}
	if inc, ok := m.left[msg.Node]; ok && inc == msg.Incarnation {
		return reasonStale // delayed behind the leaving heartbeat
	}
	if st := m.states[msg.Node]; st != nil && st.incarnation == msg.Incarnation && msg.Seq <= st.seq {
		return reasonStale
	}
	return ""
}

func (m *Members) reject(reason string, from netip.AddrPort, node string, err error) {
	heartbeatsRejected.WithLabelValues(reason).Inc()
	m.log.V(4).Info("Ignored heartbeat", "node", m.node, "from", from, "sender", node, "reason", reason, "err", err)
}

// recordLocked stores a heartbeat. A new incarnation replaces the old state:
// the peer restarted.
func (m *Members) recordLocked(msg *message, now time.Time) {
	st := m.states[msg.Node]
	if st == nil || st.incarnation != msg.Incarnation {
		if st != nil {
			m.log.V(1).Info("Peer restarted", "node", m.node, "peer", msg.Node, "incarnation", msg.Incarnation)
		}
		st = &peerState{incarnation: msg.Incarnation}
		m.states[msg.Node] = st
	}
	st.seq = msg.Seq
	st.lastHeard = now
	st.info = msg.Info
	st.relays = st.relays[:0]
	for _, h := range msg.Heard {
		st.relays = append(st.relays, relayed{
			node:        h.Node,
			incarnation: h.Incarnation,
			info:        h.Info,
			until:       now.Add(m.timeout - h.Age),
		})
	}
}

// leftLocked makes a leaving incarnation dead at once, and keeps it so that
// relays still listing it cannot bring it back.
func (m *Members) leftLocked(msg *message) {
	if inc, ok := m.left[msg.Node]; ok && inc == msg.Incarnation {
		return // a further copy
	}
	m.left[msg.Node] = msg.Incarnation
	if st := m.states[msg.Node]; st != nil && st.incarnation == msg.Incarnation {
		delete(m.states, msg.Node)
	}
	m.log.V(1).Info("Peer is leaving", "node", m.node, "peer", msg.Node, "incarnation", msg.Incarnation)
}

// hasLeft reports whether that incarnation of node said it is leaving.
func (m *Members) hasLeft(node string, incarnation uint64) bool {
	inc, ok := m.left[node]
	return ok && inc == incarnation
}

// directLocked reports whether the peer was heard directly within Timeout.
func (m *Members) directLocked(st *peerState, now time.Time) bool {
	return now.Sub(st.lastHeard) < m.timeout
}

// heardLocked lists the peers heard directly within Timeout, most recently
// heard first: the heard list of the next heartbeat.
func (m *Members) heardLocked(now time.Time) []relayEntry {
	var heard []relayEntry
	for name, st := range m.states {
		if m.directLocked(st, now) {
			heard = append(heard, relayEntry{Node: name, Incarnation: st.incarnation, Age: now.Sub(st.lastHeard), Info: st.info})
		}
	}
	slices.SortFunc(heard, func(a, b relayEntry) int {
		return cmp.Or(cmp.Compare(a.Age, b.Age), cmp.Compare(a.Node, b.Node))
	})
	return heard
}

// computeView derives the membership at now from what was heard.
func (m *Members) computeView(now time.Time) View {
	self := Peer{Info: m.info, Direct: true}
	alive := map[string]Peer{m.node: self}
	for name, st := range m.states {
		if m.directLocked(st, now) {
			alive[name] = Peer{Info: st.info, Direct: true, HearsUs: m.listedLocked(st)}
		}
	}
	if len(alive) == 1 && m.recentlyHeardLocked(now) {
		return View{Alive: alive, Isolated: true}
	}
	for name, r := range m.relayedLocked(now) {
		if _, ok := alive[name]; !ok {
			alive[name] = Peer{Info: r.info}
		}
	}
	return View{Alive: alive}
}

// listedLocked reports whether the peer's latest heartbeat lists this
// node's current incarnation among those it hears.
func (m *Members) listedLocked(st *peerState) bool {
	for _, r := range st.relays {
		if r.node == m.node && r.incarnation == m.incarnation {
			return true
		}
	}
	return false
}

// recentlyHeardLocked reports whether at least two peers were heard within
// Forget: when this node hears none of them now, it is far likelier that
// this node is cut off than that they all died at once. With a single peer
// (a two-node cluster) the two cases look the same; the survivor of a peer's
// death must keep answering, so a lone peer's silence is not isolation.
func (m *Members) recentlyHeardLocked(now time.Time) bool {
	n := 0
	for _, st := range m.states {
		if now.Sub(st.lastHeard) < m.forget {
			n++
		}
	}
	return n >= 2
}

// relayedLocked returns the valid relay reports by node: from peers heard
// directly, about known peers, not about a leaving incarnation, not expired.
// Of several reports about one node, the freshest wins.
func (m *Members) relayedLocked(now time.Time) map[string]relayed {
	best := map[string]relayed{}
	for _, st := range m.states {
		if !m.directLocked(st, now) {
			continue
		}
		for _, r := range st.relays {
			if !m.usableLocked(r, now) {
				continue
			}
			if cur, ok := best[r.node]; !ok || r.until.After(cur.until) {
				best[r.node] = r
			}
		}
	}
	return best
}

func (m *Members) usableLocked(r relayed, now time.Time) bool {
	if r.node == m.node || !now.Before(r.until) || m.hasLeft(r.node, r.incarnation) {
		return false
	}
	_, known := m.peers[r.node]
	return known
}

// refreshLocked recomputes the view and signals Changes if it differs.
func (m *Members) refreshLocked(now time.Time) {
	v := m.computeView(now)
	if viewsEqual(v, m.view) {
		return
	}
	m.logChanges(m.view, v)
	m.view = v
	peersAlive.Set(float64(len(v.Alive) - 1))
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// logChanges logs what differs between two views.
func (m *Members) logChanges(old, cur View) {
	if old.Isolated != cur.Isolated {
		if cur.Isolated {
			m.log.Info("Isolated: no peer heard, although peers were heard recently", "node", m.node, "timeout", m.timeout)
		} else {
			m.log.Info("No longer isolated", "node", m.node)
		}
	}
	for name, p := range cur.Alive {
		if o, ok := old.Alive[name]; !ok {
			m.log.V(1).Info("Peer alive", "node", m.node, "peer", name, "direct", p.Direct)
		} else if o.Direct != p.Direct {
			m.log.V(2).Info("Peer reachability changed", "node", m.node, "peer", name, "direct", p.Direct)
		}
	}
	for name := range old.Alive {
		if _, ok := cur.Alive[name]; !ok {
			m.log.V(1).Info("Peer dead", "node", m.node, "peer", name)
		}
	}
}

func viewsEqual(a, b View) bool {
	if a.Isolated != b.Isolated || len(a.Alive) != len(b.Alive) {
		return false
	}
	for name, pa := range a.Alive {
		pb, ok := b.Alive[name]
		if !ok || pa.Direct != pb.Direct || pa.HearsUs != pb.HearsUs || !maps.Equal(pa.Info, pb.Info) {
			return false
		}
	}
	return true
}

// cloneView copies v deeply, so the caller cannot change the cached view.
func cloneView(v View) View {
	alive := make(map[string]Peer, len(v.Alive))
	for name, p := range v.Alive {
		alive[name] = Peer{Info: maps.Clone(p.Info), Direct: p.Direct, HearsUs: p.HearsUs}
	}
	return View{Alive: alive, Isolated: v.Isolated}
}
