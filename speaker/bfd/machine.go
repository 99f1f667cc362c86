package bfd

import "time"

// slowTx is the least Desired Min TX Interval a session advertises while it
// is not Up (RFC 5880 §6.8.3), so sessions that are not Up cost little.
const slowTx = time.Second

// intervals are what a session advertises: its receive and transmit
// intervals and detect multiplier.
type intervals struct {
	MinRx time.Duration // Required Min RX Interval
	MinTx time.Duration // Desired Min TX Interval (while Up)
	Mult  uint8         // Detect Mult
}

// Change is a session state change.
type Change struct {
	From  State
	State State
	// Diag is the local diagnostic: why the session left Up
	// (DiagDetectionTimeExpired, DiagNeighborSignaledDown,
	// DiagAdministrativelyDown); DiagNone once Up.
	Diag Diag
	At   time.Time
	// RemoteAdminDown is true when the session went Down because the peer
	// said it is administratively down: the peer is shutting down on
	// purpose, which is no failure of the path.
	RemoteAdminDown bool
	// RemoteDiag is, when the session went Down because the peer said
	// Down, the diagnostic the peer gave: Diag.PathFailed says whether it
	// tells of a failure of the path.
	RemoteDiag Diag
}

// output is what the machine asks its runner to do at once: send these
// packets (in order), report this change.
type output struct {
	send   []Packet
	change *Change
}

// machine is one session's state machine (RFC 5880 §6.8). It reads no
// clock and opens no socket: every input carries the time, and every
// output is a value for the runner to act on.
type machine struct {
	discr uint32
	cfg   intervals
	// rand returns a number in [0, 1) for the transmit jitter.
	rand func() float64

	state State
	diag  Diag

	remoteState State
	remoteDiscr uint32
	remoteMinRx time.Duration
	remoteMinTx time.Duration
	remoteMult  uint8
	// remoteDemand: the peer asks for no periodic packets while both
	// ends are Up (Demand mode, §6.6); this side never asks for it.
	remoteDemand bool

	// txEff and rxEff are the local intervals in effect, which lag the
	// advertised ones while a Poll Sequence confirms that the peer has
	// seen a slower transmit rate or a faster receive rate (§6.8.3).
	txEff, rxEff time.Duration
	// polling: a Poll Sequence is in progress for pollTx and pollRx;
	// repoll: the timers changed again since it began.
	polling, repoll bool
	pollTx, pollRx  time.Duration

	detectAt time.Time // zero while no detection timer runs
	nextTx   time.Time
}

func newMachine(discr uint32, cfg intervals, rand func() float64, now time.Time) *machine {
	m := &machine{
		discr:       discr,
		cfg:         cfg,
		rand:        rand,
		state:       Down,
		remoteState: Down,
		// §6.8.1: 1 µs until the peer says otherwise, so the first
		// packets go out.
		remoteMinRx: time.Microsecond,
		nextTx:      now,
	}
	m.txEff, m.rxEff = m.advertisedTx(), cfg.MinRx
	return m
}

func (m *machine) advertisedTx() time.Duration {
	if m.state != Up {
		return max(m.cfg.MinTx, slowTx)
	}
	return m.cfg.MinTx
}

// txInterval is the agreed transmit interval, before jitter.
func (m *machine) txInterval() time.Duration {
	return max(m.txEff, m.remoteMinRx)
}

// detectTime is the time without a packet after which the peer is down.
func (m *machine) detectTime() time.Duration {
	return time.Duration(m.remoteMult) * max(m.rxEff, m.remoteMinTx)
}

// jitter shortens d by 0 to 25 % (10 to 25 % at a detect multiplier of 1,
// so that one late packet cannot expire the peer's detection time), as
// §6.8.7 asks.
func (m *machine) jitter(d time.Duration) time.Duration {
	spread := 0.25
	if m.cfg.Mult == 1 {
		spread = 0.15
	}
	return time.Duration(float64(d) * (0.75 + spread*m.rand()))
}

// packet is the control packet the session sends now.
func (m *machine) packet(final bool) Packet {
	return Packet{
		Version:       1,
		Diag:          m.diag,
		State:         m.state,
		Poll:          m.polling && !final,
		Final:         final,
		DetectMult:    m.cfg.Mult,
		Length:        packetLen,
		MyDiscr:       m.discr,
		YourDiscr:     m.remoteDiscr,
		DesiredMinTx:  m.advertisedTx(),
		RequiredMinRx: m.cfg.MinRx,
	}
}

// send adds a packet to out and starts the transmit interval afresh.
func (m *machine) send(out *output, now time.Time, final bool) {
	out.send = append(out.send, m.packet(final))
	m.nextTx = now.Add(m.jitter(m.txInterval()))
}

// mayTransmit: the peer has not asked for no periodic packets (§6.8.7).
func (m *machine) mayTransmit() bool {
	demand := m.remoteDemand && m.state == Up && m.remoteState == Up
	return m.remoteMinRx != 0 && !demand
}

// deadline is when tick must next run.
func (m *machine) deadline() time.Time {
	var d time.Time
	if m.mayTransmit() {
		d = m.nextTx
	}
	if !m.detectAt.IsZero() && (d.IsZero() || m.detectAt.Before(d)) {
		d = m.detectAt
	}
	return d
}

func (m *machine) setState(s State, d Diag, now time.Time, remoteAdminDown bool) *Change {
	c := &Change{From: m.state, State: s, Diag: d, At: now, RemoteAdminDown: remoteAdminDown}
	wasUp := m.state == Up
	m.state, m.diag = s, d
	if wasUp != (s == Up) {
		m.timersChanged(false)
	}
	return c
}

// timersChanged applies a change of the advertised timers: at once while
// the session is not Up; while Up, through a Poll Sequence, taking a
// faster transmit or slower receive interval at once and the others when
// the peer confirms (§6.8.3). force starts a poll even if nothing changed.
func (m *machine) timersChanged(force bool) {
	tx, rx := m.advertisedTx(), m.cfg.MinRx
	if m.state != Up {
		m.txEff, m.rxEff = tx, rx
		m.polling, m.repoll = false, false
		return
	}
	if !force && tx == m.txEff && rx == m.rxEff {
		return
	}
	m.txEff = min(m.txEff, tx)
	m.rxEff = max(m.rxEff, rx)
	if m.polling {
		m.repoll = true
		return
	}
	m.startPoll()
}

func (m *machine) startPoll() {
	m.polling, m.repoll = true, false
	m.pollTx, m.pollRx = m.advertisedTx(), m.cfg.MinRx
}

// finishPoll takes the values the peer has now seen. After a repoll, the
// peer may not have seen the latest ones yet, so the safer of the two
// apply until the next poll ends.
func (m *machine) finishPoll() {
	m.txEff = min(m.pollTx, m.advertisedTx())
	m.rxEff = max(m.pollRx, m.cfg.MinRx)
	m.polling = false
	if m.repoll {
		m.startPoll()
	}
}

// receive processes a packet that passed Parse and belongs to this session
// (RFC 5880 §6.8.6, from "Set bfd.RemoteDiscr"). It reports false when the
// packet is to be dropped because the session is AdminDown.
func (m *machine) receive(p Packet, now time.Time) (output, bool) {
	var out output
	m.remoteDiscr = p.MyDiscr
	m.remoteState = p.State
	m.remoteMinRx = p.RequiredMinRx
	m.remoteMinTx = p.DesiredMinTx
	m.remoteMult = p.DetectMult
	m.remoteDemand = p.Demand
	if p.Final && m.polling {
		m.finishPoll()
	}
	if m.state == AdminDown {
		return out, false
	}
	switch {
	case p.State == AdminDown:
		if m.state != Down {
			out.change = m.setState(Down, DiagNeighborSignaledDown, now, true)
		}
	case m.state == Down && p.State == Down:
		out.change = m.setState(Init, m.diag, now, false)
	case m.state == Down && p.State == Init,
		m.state == Init && (p.State == Init || p.State == Up):
		out.change = m.setState(Up, DiagNone, now, false)
	case m.state == Up && p.State == Down:
		out.change = m.setState(Down, DiagNeighborSignaledDown, now, false)
		out.change.RemoteDiag = p.Diag
	}
	m.detectAt = now.Add(m.detectTime())
	switch {
	case out.change != nil || p.Poll:
		// A state change goes out at once; so does the Final a Poll
		// asks for (§6.8.6), and it must not carry Poll itself.
		m.send(&out, now, p.Poll)
	case m.nextTx.After(now.Add(m.txInterval())):
		// The peer asked for a faster rate than the one scheduled.
		m.nextTx = now.Add(m.jitter(m.txInterval()))
	}
	return out, true
}

// tick runs the timers: detection (§6.8.4) and periodic transmission
// (§6.8.7).
func (m *machine) tick(now time.Time) output {
	var out output
	if !m.detectAt.IsZero() && !now.Before(m.detectAt) {
		m.detectAt = time.Time{}
		m.remoteDiscr = 0
		m.remoteState = Down
		if m.state == Init || m.state == Up {
			out.change = m.setState(Down, DiagDetectionTimeExpired, now, false)
			m.send(&out, now, false)
			return out
		}
	}
	if m.mayTransmit() && !now.Before(m.nextTx) {
		m.send(&out, now, false)
	}
	return out
}

// setTimers changes the advertised timers and, while Up, starts a Poll
// Sequence with a packet sent at once.
func (m *machine) setTimers(t intervals, now time.Time) output {
	var out output
	m.cfg = t
	m.timersChanged(true)
	if m.polling {
		m.send(&out, now, false)
	}
	return out
}

// adminDown takes the session administratively down and sends the packet
// that tells the peer.
func (m *machine) adminDown(now time.Time) output {
	var out output
	if m.state != AdminDown {
		out.change = m.setState(AdminDown, DiagAdministrativelyDown, now, false)
	}
	m.detectAt = time.Time{}
	m.send(&out, now, false)
	return out
}
