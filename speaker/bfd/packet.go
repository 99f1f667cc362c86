package bfd

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// State is a session state (RFC 5880 §4.1), as carried on the wire.
type State uint8

const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag says why a session last left Up (RFC 5880 §4.1). Only the codes
// this package sets have names; others are carried as received.
type Diag uint8

const (
	DiagNone                 Diag = 0
	DiagDetectionTimeExpired Diag = 1
	DiagNeighborSignaledDown Diag = 3
	DiagAdministrativelyDown Diag = 7
)

func (d Diag) String() string {
	switch d {
	case DiagNone:
		return "None"
	case DiagDetectionTimeExpired:
		return "ControlDetectionTimeExpired"
	case DiagNeighborSignaledDown:
		return "NeighborSignaledSessionDown"
	case DiagAdministrativelyDown:
		return "AdministrativelyDown"
	}
	return fmt.Sprintf("Diag(%d)", uint8(d))
}

// PathFailed reports whether a peer that says Down with diagnostic d while
// this end is Up tells of a failure of the path: it no longer hears this end
// (its detection time expired), or names another failure (echo, path or
// forwarding plane down). The others are no failure, and the peer's packet
// shows that the path carries its packets: DiagNone is a session that just
// began; DiagNeighborSignaledDown says this end signaled Down, which it did
// not while Up, so the peer is tearing its session down, as FRR's bfdd does
// when the router's BGP registers the session again once it is up, before
// it starts a new one; DiagAdministrativelyDown is a planned stop.
func (d Diag) PathFailed() bool {
	switch d {
	case DiagNone, DiagNeighborSignaledDown, DiagAdministrativelyDown:
		return false
	}
	return true
}

// packetLen is the length of a control packet without authentication, the
// only kind this package sends or accepts.
const packetLen = 24

// Packet is a BFD control packet (RFC 5880 §4.1). Intervals travel as
// microseconds; a Packet holds them as durations.
type Packet struct {
	Version    uint8
	Diag       Diag
	State      State
	Poll       bool
	Final      bool
	CPI        bool // control plane independent
	Auth       bool
	Demand     bool
	Multipoint bool
	DetectMult uint8
	Length     uint8
	MyDiscr    uint32
	YourDiscr  uint32

	DesiredMinTx      time.Duration
	RequiredMinRx     time.Duration
	RequiredMinEchoRx time.Duration
}

const (
	flagPoll       = 0x20
	flagFinal      = 0x10
	flagCPI        = 0x08
	flagAuth       = 0x04
	flagDemand     = 0x02
	flagMultipoint = 0x01
)

// Marshal encodes p as version 1, length 24, whatever p.Version and
// p.Length hold.
func (p Packet) Marshal() []byte {
	b := make([]byte, packetLen)
	b[0] = 1<<5 | uint8(p.Diag)&0x1f
	b[1] = uint8(p.State)&0x3<<6 | flagBits(p)
	b[2] = p.DetectMult
	b[3] = packetLen
	binary.BigEndian.PutUint32(b[4:], p.MyDiscr)
	binary.BigEndian.PutUint32(b[8:], p.YourDiscr)
	binary.BigEndian.PutUint32(b[12:], micros(p.DesiredMinTx))
	binary.BigEndian.PutUint32(b[16:], micros(p.RequiredMinRx))
	binary.BigEndian.PutUint32(b[20:], micros(p.RequiredMinEchoRx))
	return b
}

func flagBits(p Packet) uint8 {
	var f uint8
	for _, each := range []struct {
		set bool
		bit uint8
	}{{p.Poll, flagPoll}, {p.Final, flagFinal}, {p.CPI, flagCPI}, {p.Auth, flagAuth}, {p.Demand, flagDemand}, {p.Multipoint, flagMultipoint}} {
		if each.set {
			f |= each.bit
		}
	}
	return f
}

func micros(d time.Duration) uint32 {
	us := d / time.Microsecond
	if us < 0 {
		return 0
	}
	if us > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(us)
}

// Reason says why a received packet was dropped; it is the value of the
// reason label of the drop counter.
type Reason string

const (
	ReasonShort      Reason = "short"            // fewer bytes than a control packet
	ReasonVersion    Reason = "version"          // not version 1
	ReasonLength     Reason = "length"           // length field below 24 or beyond the datagram
	ReasonDetectMult Reason = "detect_mult"      // detect multiplier 0
	ReasonMultipoint Reason = "multipoint"       // M bit set
	ReasonMyDiscr    Reason = "my_discr"         // my discriminator 0
	ReasonYourDiscr  Reason = "your_discr"       // your discriminator 0 outside Down and AdminDown
	ReasonAuth       Reason = "auth"             // A bit set: authentication is not configured
	ReasonNoSession  Reason = "no_session"       // no session has that discriminator or peer
	ReasonWrongPeer  Reason = "wrong_peer"       // the discriminator's session has another peer
	ReasonTTL        Reason = "ttl"              // single hop, and TTL or hop limit not 255
	ReasonQueueFull  Reason = "queue_full"       // the session is not keeping up
	ReasonAdminDown  Reason = "local_admin_down" // the session is administratively down
)

var reasons = []Reason{ReasonShort, ReasonVersion, ReasonLength, ReasonDetectMult, ReasonMultipoint, ReasonMyDiscr, ReasonYourDiscr, ReasonAuth, ReasonNoSession, ReasonWrongPeer, ReasonTTL, ReasonQueueFull, ReasonAdminDown}

// DropError is the error of a packet that must be dropped.
type DropError struct {
	Reason Reason
	Detail string
}

func (e *DropError) Error() string {
	return fmt.Sprintf("drop BFD packet (%s): %s", e.Reason, e.Detail)
}

func drop(r Reason, format string, args ...any) *DropError {
	return &DropError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Parse decodes and checks a control packet by the rules of RFC 5880
// §6.8.6 that need no session. A packet to drop returns a *DropError.
func Parse(b []byte) (Packet, error) {
	if len(b) < packetLen {
		return Packet{}, drop(ReasonShort, "%d bytes", len(b))
	}
	p := Packet{
		Version:           b[0] >> 5,
		Diag:              Diag(b[0] & 0x1f),
		State:             State(b[1] >> 6),
		Poll:              b[1]&flagPoll != 0,
		Final:             b[1]&flagFinal != 0,
		CPI:               b[1]&flagCPI != 0,
		Auth:              b[1]&flagAuth != 0,
		Demand:            b[1]&flagDemand != 0,
		Multipoint:        b[1]&flagMultipoint != 0,
		DetectMult:        b[2],
		Length:            b[3],
		MyDiscr:           binary.BigEndian.Uint32(b[4:]),
		YourDiscr:         binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx:      time.Duration(binary.BigEndian.Uint32(b[12:])) * time.Microsecond,
		RequiredMinRx:     time.Duration(binary.BigEndian.Uint32(b[16:])) * time.Microsecond,
		RequiredMinEchoRx: time.Duration(binary.BigEndian.Uint32(b[20:])) * time.Microsecond,
	}
	switch {
	case p.Version != 1:
		return p, drop(ReasonVersion, "version %d", p.Version)
	case p.Length < packetLen:
		return p, drop(ReasonLength, "length field %d below %d", p.Length, packetLen)
	case int(p.Length) > len(b):
		return p, drop(ReasonLength, "length field %d beyond the %d bytes received", p.Length, len(b))
	case p.DetectMult == 0:
		return p, drop(ReasonDetectMult, "detect multiplier 0")
	case p.Multipoint:
		return p, drop(ReasonMultipoint, "multipoint bit set")
	case p.MyDiscr == 0:
		return p, drop(ReasonMyDiscr, "my discriminator 0")
	case p.YourDiscr == 0 && p.State != Down && p.State != AdminDown:
		return p, drop(ReasonYourDiscr, "your discriminator 0 in state %s", p.State)
	case p.Auth:
		// Checked last: RFC 5880 §6.8.6 checks the A bit after the
		// session is selected, but no session here uses authentication.
		return p, drop(ReasonAuth, "authenticated packet, authentication not configured")
	}
	return p, nil
}
