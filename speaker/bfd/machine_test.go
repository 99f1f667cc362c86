package bfd

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const ms = time.Millisecond

var defaultTimers = intervals{MinRx: 300 * ms, MinTx: 300 * ms, Mult: 3}

// fixedRand makes the jitter a known fraction.
func fixedRand(v float64) func() float64 { return func() float64 { return v } }

// peer is a packet from the peer, in state s, with the default timers.
func peer(s State) Packet {
	return Packet{Version: 1, State: s, DetectMult: 3, Length: packetLen, MyDiscr: 99, YourDiscr: 1,
		DesiredMinTx: 300 * ms, RequiredMinRx: 300 * ms}
}

// machineIn returns a machine driven into state s by packets.
func machineIn(t *testing.T, s State) *machine {
	t.Helper()
	m := newMachine(1, defaultTimers, fixedRand(0.5), t0)
	switch s {
	case AdminDown:
		m.adminDown(t0)
	case Init:
		m.receive(peer(Down), t0)
	case Up:
		m.receive(peer(Init), t0)
		// The poll that going Up starts is answered.
		f := peer(Up)
		f.Final = true
		m.receive(f, t0)
	}
	if m.state != s {
		t.Fatalf("setup: state %s, want %s", m.state, s)
	}
	return m
}

func TestMachine_ReceptionFollowsRFC5880StateTable(t *testing.T) {
	type want struct {
		state           State
		changed         bool
		diag            Diag
		remoteAdminDown bool
	}
	for _, tc := range []struct {
		local, remote State
		want          want
	}{
		{AdminDown, AdminDown, want{state: AdminDown}},
		{AdminDown, Down, want{state: AdminDown}},
		{AdminDown, Init, want{state: AdminDown}},
		{AdminDown, Up, want{state: AdminDown}},
		{Down, AdminDown, want{state: Down}},
		{Down, Down, want{state: Init, changed: true}},
		{Down, Init, want{state: Up, changed: true}},
		{Down, Up, want{state: Down}},
		{Init, AdminDown, want{state: Down, changed: true, diag: DiagNeighborSignaledDown, remoteAdminDown: true}},
		{Init, Down, want{state: Init}},
		{Init, Init, want{state: Up, changed: true}},
		{Init, Up, want{state: Up, changed: true}},
		{Up, AdminDown, want{state: Down, changed: true, diag: DiagNeighborSignaledDown, remoteAdminDown: true}},
		{Up, Down, want{state: Down, changed: true, diag: DiagNeighborSignaledDown}},
		{Up, Init, want{state: Up}},
		{Up, Up, want{state: Up}},
	} {
		t.Run(tc.local.String()+"_receives_"+tc.remote.String(), func(t *testing.T) {
			m := machineIn(t, tc.local)
			out, accepted := m.receive(peer(tc.remote), t0.Add(ms))
			if accepted != (tc.local != AdminDown) {
				t.Errorf("accepted %v in local state %s", accepted, tc.local)
			}
			if m.state != tc.want.state {
				t.Errorf("state %s, want %s", m.state, tc.want.state)
			}
			if (out.change != nil) != tc.want.changed {
				t.Fatalf("change %+v, want one: %v", out.change, tc.want.changed)
			}
			if out.change == nil {
				return
			}
			c := *out.change
			if c.From != tc.local || c.State != tc.want.state || c.Diag != tc.want.diag || c.RemoteAdminDown != tc.want.remoteAdminDown {
				t.Errorf("change %+v, want %s -> %s diag %s remoteAdminDown %v", c, tc.local, tc.want.state, tc.want.diag, tc.want.remoteAdminDown)
			}
			if len(out.send) != 1 || out.send[0].State != tc.want.state || out.send[0].Diag != tc.want.diag {
				t.Errorf("sent %+v, want one packet announcing %s diag %s", out.send, tc.want.state, tc.want.diag)
			}
		})
	}
}

func TestMachine_LearnsPeerDiscriminatorAndEchoesIt(t *testing.T) {
	m := newMachine(1, defaultTimers, fixedRand(0), t0)
	if p := m.tick(t0).send; len(p) != 1 || p[0].YourDiscr != 0 || p[0].MyDiscr != 1 || p[0].State != Down {
		t.Fatalf("first packet %+v, want Down with your discr 0", p)
	}
	m.receive(peer(Down), t0)
	if p := m.packet(false); p.YourDiscr != 99 {
		t.Errorf("your discr %d after hearing the peer, want 99", p.YourDiscr)
	}
}

func TestMachine_DetectionTimeExpiryTakesSessionDownWithDiag1(t *testing.T) {
	for _, s := range []State{Init, Up} {
		t.Run(s.String(), func(t *testing.T) {
			m := machineIn(t, s)
			last := t0.Add(10 * ms)
			m.receive(peer(Up), last)
			// 3 × max(300 ms local, 300 ms remote).
			if out := m.tick(last.Add(900*ms - time.Nanosecond)); out.change != nil {
				t.Fatalf("went %s before the detection time", out.change.State)
			}
			out := m.tick(last.Add(900 * ms))
			if out.change == nil || out.change.State != Down || out.change.Diag != DiagDetectionTimeExpired || out.change.RemoteAdminDown {
				t.Fatalf("change %+v, want Down with diag 1", out.change)
			}
			if len(out.send) != 1 || out.send[0].State != Down || out.send[0].Diag != DiagDetectionTimeExpired || out.send[0].YourDiscr != 0 {
				t.Errorf("sent %+v, want Down, diag 1, your discr 0", out.send)
			}
		})
	}
}

func TestMachine_DetectionTimeIsRemoteMultTimesSlowerOfLocalRxAndRemoteTx(t *testing.T) {
	for _, tc := range []struct {
		localRx, remoteTx time.Duration
		remoteMult        uint8
		want              time.Duration
	}{
		{300 * ms, 300 * ms, 3, 900 * ms},
		{300 * ms, 500 * ms, 4, 2000 * ms},
		{700 * ms, 100 * ms, 2, 1400 * ms},
	} {
		m := newMachine(1, intervals{MinRx: tc.localRx, MinTx: 300 * ms, Mult: 3}, fixedRand(0), t0)
		p := peer(Init)
		p.DesiredMinTx, p.DetectMult = tc.remoteTx, tc.remoteMult
		m.receive(p, t0)
		if got := m.detectAt.Sub(t0); got != tc.want {
			t.Errorf("local rx %v, remote tx %v × %d: detection time %v, want %v", tc.localRx, tc.remoteTx, tc.remoteMult, got, tc.want)
		}
	}
}

func TestMachine_DownSessionDoesNotFailButForgetsPeerDiscriminator(t *testing.T) {
	m := newMachine(1, defaultTimers, fixedRand(0), t0)
	m.receive(peer(AdminDown), t0)
	out := m.tick(t0.Add(10 * time.Second))
	if out.change != nil {
		t.Errorf("change %+v in Down", out.change)
	}
	if m.remoteDiscr != 0 {
		t.Errorf("remote discr %d after the detection time, want 0", m.remoteDiscr)
	}
}

func TestMachine_TransmitIntervalIsSlowerOfLocalTxAndRemoteRxWithJitter(t *testing.T) {
	for _, tc := range []struct {
		name            string
		localTx         time.Duration
		remoteRx        time.Duration
		mult            uint8
		rand            float64
		wantMin, wantMx time.Duration
	}{
		{"local slower, least jitter", 300 * ms, 100 * ms, 3, 0, 225 * ms, 225 * ms},
		{"local slower, most jitter", 300 * ms, 100 * ms, 3, 0.9999, 299 * ms, 300 * ms},
		{"remote slower", 300 * ms, 500 * ms, 3, 0, 375 * ms, 375 * ms},
		{"mult 1 stays under 90 %", 300 * ms, 100 * ms, 1, 0.9999, 269 * ms, 270 * ms},
		{"mult 1 least", 300 * ms, 100 * ms, 1, 0, 225 * ms, 225 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(1, intervals{MinRx: 300 * ms, MinTx: tc.localTx, Mult: tc.mult}, fixedRand(tc.rand), t0)
			m.receive(peer(Init), t0) // Up: the configured tx applies at once (it is faster)
			p := peer(Up)
			p.RequiredMinRx = tc.remoteRx
			m.receive(p, t0)
			now := m.nextTx
			if out := m.tick(now); len(out.send) != 1 {
				t.Fatalf("sent %d packets when due, want 1", len(out.send))
			}
			if got := m.nextTx.Sub(now); got < tc.wantMin || got > tc.wantMx {
				t.Errorf("next packet in %v, want within [%v, %v]", got, tc.wantMin, tc.wantMx)
			}
		})
	}
}

func TestMachine_AdvertisesOneSecondTxUntilUp(t *testing.T) {
	m := newMachine(1, defaultTimers, fixedRand(0), t0)
	if p := m.packet(false); p.DesiredMinTx != time.Second || p.RequiredMinRx != 300*ms {
		t.Errorf("Down: advertised tx %v rx %v, want 1s and 300ms", p.DesiredMinTx, p.RequiredMinRx)
	}
	m.tick(t0)
	if got := m.nextTx.Sub(t0); got < 750*ms {
		t.Errorf("Down: next packet in %v, want at least 750ms", got)
	}
	m.receive(peer(Init), t0)
	if p := m.packet(false); p.DesiredMinTx != 300*ms {
		t.Errorf("Up: advertised tx %v, want 300ms", p.DesiredMinTx)
	}
	m.receive(peer(Down), t0)
	if p := m.packet(false); p.DesiredMinTx != time.Second {
		t.Errorf("Down again: advertised tx %v, want 1s", p.DesiredMinTx)
	}
}

func TestMachine_GoingUpPollsForTheFasterRate(t *testing.T) {
	m := newMachine(1, defaultTimers, fixedRand(0), t0)
	out, _ := m.receive(peer(Init), t0)
	if len(out.send) != 1 || !out.send[0].Poll || out.send[0].State != Up {
		t.Fatalf("sent %+v on going Up, want an Up packet with Poll", out.send)
	}
	f := peer(Up)
	f.Final = true
	m.receive(f, t0)
	if m.polling || m.packet(false).Poll {
		t.Errorf("still polling after Final")
	}
}

func TestMachine_RepliesToPollWithFinalOnly(t *testing.T) {
	m := machineIn(t, Up)
	m.setTimers(intervals{MinRx: 300 * ms, MinTx: 500 * ms, Mult: 3}, t0) // our own poll in progress
	p := peer(Up)
	p.Poll = true
	out, _ := m.receive(p, t0.Add(ms))
	if len(out.send) != 1 || !out.send[0].Final || out.send[0].Poll {
		t.Fatalf("sent %+v in reply to Poll, want one packet with Final and without Poll", out.send)
	}
	if !m.polling {
		t.Errorf("the peer's Poll ended this session's own Poll Sequence")
	}
}

func TestMachine_SlowerTxTakesEffectOnlyAfterFinal(t *testing.T) {
	m := machineIn(t, Up)
	out := m.setTimers(intervals{MinRx: 300 * ms, MinTx: time.Second, Mult: 3}, t0)
	if len(out.send) != 1 || !out.send[0].Poll || out.send[0].DesiredMinTx != time.Second {
		t.Fatalf("sent %+v on SetTimers, want a Poll advertising 1s", out.send)
	}
	if m.txInterval() != 300*ms {
		t.Errorf("transmit interval %v before Final, want the old 300ms", m.txInterval())
	}
	if p := m.tick(m.nextTx).send; len(p) != 1 || !p[0].Poll {
		t.Errorf("periodic packet %+v during the poll, want Poll set", p)
	}
	f := peer(Up)
	f.Final = true
	m.receive(f, t0.Add(100*ms))
	if m.txInterval() != time.Second {
		t.Errorf("transmit interval %v after Final, want 1s", m.txInterval())
	}
	if m.packet(false).Poll {
		t.Errorf("Poll still set after Final")
	}
}

func TestMachine_FasterRxTakesEffectOnlyAfterFinal(t *testing.T) {
	m := machineIn(t, Up)
	m.setTimers(intervals{MinRx: 100 * ms, MinTx: 300 * ms, Mult: 3}, t0)
	p := peer(Up)
	p.DesiredMinTx = 100 * ms
	m.receive(p, t0)
	if got := m.detectAt.Sub(t0); got != 900*ms {
		t.Errorf("detection time %v before Final, want the old 3 × 300ms", got)
	}
	p.Final = true
	m.receive(p, t0)
	if got := m.detectAt.Sub(t0); got != 300*ms {
		t.Errorf("detection time %v after Final, want 3 × 100ms", got)
	}
}

func TestMachine_FasterTxAndSlowerRxTakeEffectAtOnce(t *testing.T) {
	m := machineIn(t, Up)
	m.setTimers(intervals{MinRx: 600 * ms, MinTx: 100 * ms, Mult: 3}, t0)
	p := peer(Up)
	p.RequiredMinRx = 50 * ms
	m.receive(p, t0)
	if m.txInterval() != 100*ms {
		t.Errorf("transmit interval %v, want 100ms at once", m.txInterval())
	}
	if got := m.detectAt.Sub(t0); got != 1800*ms {
		t.Errorf("detection time %v, want 3 × 600ms at once", got)
	}
}

func TestMachine_TimersChangedDuringPollArePolledAgain(t *testing.T) {
	m := machineIn(t, Up)
	m.setTimers(intervals{MinRx: 300 * ms, MinTx: time.Second, Mult: 3}, t0)
	m.setTimers(intervals{MinRx: 300 * ms, MinTx: 2 * time.Second, Mult: 3}, t0)
	f := peer(Up)
	f.Final = true
	m.receive(f, t0)
	if !m.polling || !m.packet(false).Poll {
		t.Fatalf("not polling for the second change after the first Final")
	}
	if m.txEff != time.Second {
		t.Errorf("tx in effect %v after the first Final, want 1s (the peer may not have seen 2s)", m.txEff)
	}
	m.receive(f, t0)
	if m.polling || m.txEff != 2*time.Second {
		t.Errorf("polling %v, tx in effect %v after the second Final, want done at 2s", m.polling, m.txEff)
	}
}

func TestMachine_SetTimersWhileDownAppliesAtOnceWithoutPoll(t *testing.T) {
	m := newMachine(1, defaultTimers, fixedRand(0), t0)
	out := m.setTimers(intervals{MinRx: 500 * ms, MinTx: 2 * time.Second, Mult: 5}, t0)
	if len(out.send) != 0 || m.polling {
		t.Errorf("sent %+v, polling %v while Down", out.send, m.polling)
	}
	p := m.packet(false)
	if p.DesiredMinTx != 2*time.Second || p.RequiredMinRx != 500*ms || p.DetectMult != 5 {
		t.Errorf("advertised %+v, want 2s, 500ms, 5", p)
	}
}

func TestMachine_NoPeriodicPacketsWhenPeerAsksForNone(t *testing.T) {
	m := machineIn(t, Up)
	p := peer(Up)
	p.RequiredMinRx = 0
	m.receive(p, t0)
	if out := m.tick(t0.Add(500 * ms)); len(out.send) != 0 {
		t.Errorf("sent %+v although the peer's required min rx is 0", out.send)
	}
	if d := m.deadline(); !d.Equal(m.detectAt) {
		t.Errorf("deadline %v, want the detection time %v only", d, m.detectAt)
	}
}

func TestMachine_NoPeriodicPacketsInPeersDemandModeWhileBothUp(t *testing.T) {
	m := machineIn(t, Up)
	p := peer(Up)
	p.Demand = true
	m.receive(p, t0)
	if out := m.tick(t0.Add(200 * ms)); len(out.send) != 0 {
		t.Errorf("sent %+v although the peer is in Demand mode", out.send)
	}
	p.State = Init
	m.receive(p, t0.Add(200*ms))
	if out := m.tick(t0.Add(600 * ms)); len(out.send) != 1 {
		t.Errorf("sent %d packets while the peer is not Up, want periodic packets again", len(out.send))
	}
}

func TestMachine_AdminDownTellsPeerAndIgnoresIt(t *testing.T) {
	m := machineIn(t, Up)
	out := m.adminDown(t0)
	if out.change == nil || out.change.State != AdminDown || out.change.Diag != DiagAdministrativelyDown {
		t.Fatalf("change %+v, want AdminDown diag 7", out.change)
	}
	if len(out.send) != 1 || out.send[0].State != AdminDown || out.send[0].Diag != DiagAdministrativelyDown {
		t.Errorf("sent %+v, want AdminDown diag 7", out.send)
	}
	if out := m.tick(t0.Add(time.Hour)); out.change != nil || len(out.send) != 1 || out.send[0].State != AdminDown {
		t.Errorf("later tick: %+v, want AdminDown packets and no change", out)
	}
}

func TestMachine_UpClearsDiag(t *testing.T) {
	m := machineIn(t, Up)
	m.tick(t0.Add(time.Hour))
	if m.diag != DiagDetectionTimeExpired {
		t.Fatalf("diag %s after expiry", m.diag)
	}
	m.receive(peer(Down), t0.Add(time.Hour))
	if m.state != Init || m.packet(false).Diag != DiagDetectionTimeExpired {
		t.Errorf("Init: state %s diag %s, want Init still saying why it went down", m.state, m.diag)
	}
	out, _ := m.receive(peer(Up), t0.Add(time.Hour))
	if out.change == nil || out.change.Diag != DiagNone || m.packet(false).Diag != DiagNone {
		t.Errorf("Up: change %+v, want diag cleared", out.change)
	}
}

// A peer that says Down while the session is Up takes it Down (RFC 5880),
// and the change carries the peer's diagnostic, which tells whether the
// peer no longer hears this end or merely ends its session.
func TestMachine_DownFromThePeerCarriesItsDiagnostic(t *testing.T) {
	for _, tc := range []struct {
		diag       Diag
		pathFailed bool
	}{
		{DiagDetectionTimeExpired, true},
		{Diag(5), true}, // Path Down
		{Diag(2), true}, // Echo Function Failed
		{DiagNone, false},
		{DiagNeighborSignaledDown, false},
		{DiagAdministrativelyDown, false},
	} {
		m := machineIn(t, Up)
		p := peer(Down)
		p.Diag = tc.diag
		out, _ := m.receive(p, t0.Add(ms))
		if out.change == nil || out.change.State != Down || out.change.Diag != DiagNeighborSignaledDown || out.change.RemoteDiag != tc.diag {
			t.Fatalf("peer Down with %s: change %+v, want Down (neighbor signaled) with remote diag %s", tc.diag, out.change, tc.diag)
		}
		if got := out.change.RemoteDiag.PathFailed(); got != tc.pathFailed {
			t.Errorf("%s.PathFailed() = %v, want %v", tc.diag, got, tc.pathFailed)
		}
	}
}
