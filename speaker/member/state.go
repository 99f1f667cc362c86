package member

import (
	"net/netip"
	"time"
)

// word is the freshest this node knows of one member: the member's beat,
// when that beat reached this node, and what the member said about itself.
type word struct {
	beat     uint16
	seen     time.Time // when beat last rose here; zero: nothing heard
	leaving  bool
	isolated bool
	direct   time.Time // when a datagram from the member itself last arrived
}

// resetAfter is how long a word may go without news before any beat counts
// as news: beats wrap around, so one that old can no longer be ordered.
const resetAfter = beatSpan / 2

// sender is what replay protection remembers of a member's datagrams.
type sender struct {
	incarnation uint64
	seq         uint64
}

// handle processes one datagram received from the address from at now.
func (m *Members) handle(from netip.AddrPort, data []byte, now time.Time) {
	kr := m.keys.Load()
	msg, err := open(data, kr)
	if err != nil {
		m.reject(reasonOf(err), from, "", err)
		return
	}
	if m.dropped(msg.Node, m.node) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if reason := m.checkLocked(from, msg, now); reason != "" {
		m.reject(reason, from, msg.Node, nil)
		return
	}
	heartbeatsReceived.Inc()
	m.recordLocked(msg, now)
	m.refreshLocked(now, false)
}

// checkLocked returns why an authentic msg must still be ignored, or "".
func (m *Members) checkLocked(from netip.AddrPort, msg *message, now time.Time) string {
	t := m.topo
	if msg.Node == m.node {
		return reasonSelf
	}
	i, ok := t.index[msg.Node]
	switch {
	case !ok:
		return reasonUnknownPeer
	case t.addrs[i] != from:
		return reasonWrongAddress
	case absDuration(now.Sub(msg.Sent)) > m.maxSkew:
		return reasonClock
	}
	if s, ok := m.senders[msg.Node]; ok {
		if msg.Incarnation < s.incarnation || msg.Incarnation == s.incarnation && msg.Seq <= s.seq {
			return reasonReplay
		}
	}
	return ""
}

// recordLocked takes in an accepted heartbeat: direct word of its sender
// and, if the sender indexes the same member list, its vector.
func (m *Members) recordLocked(msg *message, now time.Time) {
	t := m.topo
	if s, ok := m.senders[msg.Node]; ok && s.incarnation != msg.Incarnation {
		m.log.V(1).Info("Peer restarted", "node", m.node, "peer", msg.Node, "incarnation", msg.Incarnation)
	}
	m.senders[msg.Node] = sender{incarnation: msg.Incarnation, seq: msg.Seq}
	i := t.index[msg.Node]
	m.words[i].direct = now
	// Its own state is in its header, whatever list its vector indexes.
	m.words[i].learn(entry{Known: true, Beat: beatAt(msg.Sent), Leaving: msg.Leaving, Isolated: msg.Isolated}, now)
	if msg.MembersHash != t.hash || msg.vectorLen() != len(t.names) {
		heartbeatsOtherList.Inc()
		return
	}
	for j := range msg.vectorLen() {
		e := msg.vectorAt(j)
		if !e.Known {
			continue
		}
		if j == t.self {
			if m.lapsed && e.Beat != m.lapseBeat && !newer(e.Beat, m.lapseBeat) {
				continue // from before the lapse
			}
			if !m.heardOf || newer(e.Beat, m.reported) {
				m.reported, m.reportedRose, m.heardOf, m.lapsed = e.Beat, now, true, false
				m.heardUntil.Store(now.Add(m.heardWindow()).UnixNano())
			}
			continue
		}
		if j != i {
			m.words[j].learn(e, now)
		}
	}
}

// learn takes in e if it is news: a later beat, or any beat once the word
// is too old to order beats against.
func (w *word) learn(e entry, now time.Time) {
	// A leaving heartbeat may share the beat of the one before it.
	leaves := e.Leaving && !w.leaving && e.Beat == w.beat
	if w.seen.IsZero() || now.Sub(w.seen) >= resetAfter || newer(e.Beat, w.beat) || leaves {
		w.beat, w.seen, w.leaving, w.isolated = e.Beat, now, e.Leaving, e.Isolated
	}
}

// vectorLocked is what this node knows of every member, for its next
// heartbeat: words older than Timeout are left out, so a dead member's last
// beat is not carried around.
func (m *Members) vectorLocked(now time.Time, leaving bool) []entry {
	v := make([]entry, len(m.words))
	for j, w := range m.words {
		if j == m.topo.self {
			v[j] = entry{Known: true, Beat: beatAt(now), Leaving: leaving, Isolated: m.saysIsolatedLocked()}
			continue
		}
		if !w.seen.IsZero() && now.Sub(w.seen) < m.timeout {
			v[j] = entry{Known: true, Beat: w.beat, Leaving: w.leaving, Isolated: w.isolated}
		}
	}
	return v
}

// memberState packs what the view says of one member, so that a refresh
// that changes nothing costs one pass over a byte per member and no
// allocation: it runs for every datagram and every tick.
type memberState uint8

const (
	stateAlive memberState = 1 << iota
	stateIsolated
	stateDirect
	stateLeft // said it is leaving: dead, and known for sure
)

// stateOf is what the word w says of its member at now.
func (m *Members) stateOf(w *word, now time.Time) memberState {
	if w.leaving && !w.seen.IsZero() {
		return stateLeft
	}
	if w.seen.IsZero() || now.Sub(w.seen) >= m.timeout {
		return 0
	}
	st := stateAlive
	if w.isolated {
		st |= stateIsolated
	}
	if now.Sub(w.direct) < m.timeout {
		st |= stateDirect
	}
	return st
}

// selfLocked says whether this node is isolated at now, and why.
func (m *Members) selfLocked(now time.Time) (isolated, hearsSenders, heardOf bool) {
	t := m.topo
	if t.self < 0 || len(t.hear) == 0 {
		return false, true, true
	}
	for _, i := range t.hear {
		if w := m.words[i]; !w.direct.IsZero() && now.Sub(w.direct) < m.timeout {
			hearsSenders = true
			break
		}
	}
	// Hearing others is half of it: a node whose own heartbeats are lost
	// (one-way loss) hears everyone, but the others count it dead and take
	// its addresses. It learns so from their vectors, which carry the
	// latest beat of its own that they know: that stops rising. Like the
	// others' liveness, this is judged on when news arrived here, not by
	// comparing clocks or round trips, so delays do not cut a node off. An
	// Interval early, since the news arrives up to an Interval after the
	// peers heard it: this node stops answering before they take over.
	heardOf = m.heardOf && now.Sub(m.reportedRose) < m.timeout-m.interval
	if now.UnixNano() < m.heldUntil.Load() {
		return true, hearsSenders, false // held after a lapse (noteRound) or a cut (refreshLocked)
	}
	return !(hearsSenders && heardOf), hearsSenders, heardOf
}

// refreshLocked recomputes the view at now and signals Changes if it
// differs from the last one. Direct changes with every relay path and is
// not compared, so it never wakes a caller by itself.
//
// Good news (a member alive, this node connected) is taken at once. Bad
// news (a member dead or isolated, this node cut off) only when confirm is
// set, on the check timer: after this process was paused (CPU starvation, a
// long GC pause), datagrams wait unread in the socket, and the first of
// them read would make every other member look dead for a moment.
func (m *Members) refreshLocked(now time.Time, confirm bool) {
	iso, hearsSenders, heardOf := m.selfLocked(now)
	rebuilt := len(m.states) != len(m.words)
	if rebuilt {
		m.states = make([]memberState, len(m.words))
	}
	if iso && !m.view.Isolated && !confirm && !rebuilt {
		iso = false
	}
	if iso && !m.view.Isolated && !m.view.ConnectedSince.IsZero() {
		// Cut off after being connected. Its heartbeats say so, and the
		// peers that get them take its addresses; were the cut ended at
		// once (a busy machine, a few vectors late), it would answer on
		// next to the new owners until it read their records. It holds
		// itself cut off for a Timeout, as after a lapse, so that its
		// speaker drops what it answers and comes back as from any cut.
		m.heldUntil.Store(max(m.heldUntil.Load(), now.Add(m.timeout).UnixNano()))
		cuts.Inc()
	}
	changed := iso != m.view.Isolated || rebuilt || m.view.Members != len(m.topo.names)
	for j := range m.words {
		st := m.stateOf(&m.words[j], now)
		if !confirm && !rebuilt && worse(m.states[j], st) {
			st = m.states[j]
		}
		if st&^stateDirect != m.states[j]&^stateDirect {
			changed = true
		}
		m.states[j] = st
	}
	if !changed {
		return
	}
	v := m.buildView(iso, now)
	v.hearsSenders, v.heardOf = hearsSenders, heardOf
	m.logChanges(m.view, v)
	m.view = v
	peersAlive.Set(float64(max(len(v.Alive)-1, 0)))
	members.Set(float64(v.Members))
	isolated.Set(boolFloat(v.Isolated))
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// worse reports whether a member's state went from alive to dead (not by
// leaving, which a datagram says for sure), or to isolated.
func worse(old, cur memberState) bool {
	return old&stateAlive != 0 && cur&stateLeft == 0 && (cur&stateAlive == 0 || cur&stateIsolated != 0 && old&stateIsolated == 0)
}

// buildView makes the View of the member states.
func (m *Members) buildView(iso bool, now time.Time) View {
	t := m.topo
	v := View{Alive: map[string]Peer{}, Members: len(t.names)}
	if t.self < 0 {
		return v
	}
	v.Alive[m.node] = Peer{Direct: true, Isolated: iso}
	v.Isolated = iso
	for j, st := range m.states {
		if j != t.self && st&stateAlive != 0 {
			v.Alive[t.names[j]] = Peer{Direct: st&stateDirect != 0, Isolated: st&stateIsolated != 0}
		}
	}
	switch {
	case iso:
	case m.view.Isolated || m.view.ConnectedSince.IsZero():
		v.ConnectedSince = now
	default:
		v.ConnectedSince = m.view.ConnectedSince
	}
	return v
}

// logChanges logs what differs between two views.
func (m *Members) logChanges(old, cur View) {
	if old.Isolated != cur.Isolated {
		if cur.Isolated {
			m.log.Info("Isolated: cut off from the other members", "node", m.node, "hearsItsSenders", cur.hearsSenders, "heardOfByOthers", cur.heardOf, "timeout", m.timeout, "senders", len(m.topo.hear))
		} else {
			m.log.Info("No longer isolated", "node", m.node)
		}
	}
	for name, p := range cur.Alive {
		if o, ok := old.Alive[name]; !ok {
			m.log.V(3).Info("Peer alive", "node", m.node, "peer", name, "direct", p.Direct)
		} else if o.Isolated != p.Isolated {
			m.log.V(3).Info("Peer isolation changed", "node", m.node, "peer", name, "isolated", p.Isolated)
		}
	}
	for name := range old.Alive {
		if _, ok := cur.Alive[name]; !ok {
			m.log.V(3).Info("Peer dead", "node", m.node, "peer", name)
		}
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
