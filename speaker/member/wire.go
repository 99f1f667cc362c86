package member

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire format of one heartbeat, one UDP datagram. Integers are big-endian
// fixed width; a string is a uvarint length followed by its bytes.
//
//	magic        "ILB" and the version byte (2)
//	flags        1 byte: the sender's own state (flagLeaving, flagIsolated)
//	key id       4 bytes: which cluster key the MAC is under (see keyID)
//	incarnation  8 bytes: the sender's start, in Unix milliseconds
//	seq          8 bytes: counts up within an incarnation
//	sent         8 bytes: the sender's clock at sending, Unix milliseconds
//	members      8 bytes: hash of the member list the vector is indexed by
//	node         string: the sender's name
//	vector       uvarint count, then one 2-byte entry per member, in the
//	             order of the member list: 2 flag bits (entryLeaving,
//	             entryIsolated as the member last said; both set: nothing
//	             known) and the member's beat, 14 bits: its own clock in 10 ms
//	             units, modulo 2^14, when it sent the freshest heartbeat the
//	             sender knows of
//	mac          32 bytes: HMAC-SHA-256 under the key, of everything before it
//
// The vector is what makes the membership scale: a member sends to a bounded
// number of peers, and every peer learns from the vectors how fresh each
// other member is, without hearing it. A beat is stamped by the member
// itself and relayed unchanged, so relaying can never make word of a member
// fresher than it is: once the member stops, its beat stops rising
// everywhere. Two bytes per member keep a heartbeat
// of a 500-member cluster at about 1,100 bytes, one unfragmented datagram on
// a 1,280-byte IPv6 minimum MTU path.
const (
	wireVersion = 2
	macSize     = sha256.Size
	headerSize  = 3 + 1 + 1 + 4 + 8 + 8 + 8 + 8

	flagLeaving  = 1 << 0
	flagIsolated = 1 << 1

	entryLeaving  = 1 << 15
	entryIsolated = 1 << 14
	entryUnknown  = entryLeaving | entryIsolated
	beatBits      = 14
	beatMask      = 1<<beatBits - 1
	// beatUnit is the resolution of a beat; Interval must exceed it, so
	// every heartbeat carries a new beat.
	beatUnit = 10 * time.Millisecond
	// beatSpan is how far apart two beats can be and still be ordered
	// (serial number arithmetic, RFC 1982): half the cycle of 2^14 units.
	beatSpan = (1 << (beatBits - 1)) * beatUnit
)

var wireMagic = [3]byte{'I', 'L', 'B'}

// message is one heartbeat.
type message struct {
	Node        string
	Incarnation uint64
	Seq         uint64
	Sent        time.Time
	Leaving     bool
	Isolated    bool
	MembersHash uint64
	// Vector is what is sent; a received message keeps its vector encoded
	// in raw instead and is read with vectorLen and vectorAt, so a
	// datagram is taken in without allocating per member.
	Vector []entry
	raw    []byte
}

func (msg *message) vectorLen() int {
	if msg.raw != nil {
		return len(msg.raw) / 2
	}
	return len(msg.Vector)
}

func (msg *message) vectorAt(i int) entry {
	if msg.raw != nil {
		return decodeEntry(binary.BigEndian.Uint16(msg.raw[2*i:]))
	}
	return msg.Vector[i]
}

// entry is what the sender knows of one member.
type entry struct {
	Known    bool // false: no word within Timeout
	Beat     uint16
	Leaving  bool
	Isolated bool
}

func (e entry) encode() uint16 {
	if !e.Known {
		return entryUnknown
	}
	v := e.Beat & beatMask
	switch {
	case e.Leaving:
		v |= entryLeaving
	case e.Isolated:
		v |= entryIsolated
	}
	return v
}

func decodeEntry(v uint16) entry {
	if v&entryUnknown == entryUnknown {
		return entry{}
	}
	return entry{Known: true, Beat: v & beatMask, Leaving: v&entryLeaving != 0, Isolated: v&entryIsolated != 0}
}

// beatAt is the beat of a member's clock reading t.
func beatAt(t time.Time) uint16 {
	return uint16(t.UnixMilli()/int64(beatUnit/time.Millisecond)) & beatMask
}

// newer reports whether beat a is later than b.
func newer(a, b uint16) bool {
	d := (a - b) & beatMask
	return d != 0 && d < 1<<(beatBits-1)
}

// beatsBetween is how much later beat a is than b, as a duration; negative
// when a is earlier.
func beatsBetween(a, b uint16) time.Duration {
	d := int(a-b) & beatMask
	if d >= 1<<(beatBits-1) {
		d -= 1 << beatBits
	}
	return time.Duration(d) * beatUnit
}

// encode returns the signed datagram for msg.
func (msg *message) encode(k *key) []byte {
	b := make([]byte, 0, headerSize+1+len(msg.Node)+3+2*len(msg.Vector)+macSize)
	b = append(b, wireMagic[:]...)
	b = append(b, wireVersion, msg.flags())
	b = append(b, k.id[:]...)
	b = binary.BigEndian.AppendUint64(b, msg.Incarnation)
	b = binary.BigEndian.AppendUint64(b, msg.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(msg.Sent.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, msg.MembersHash)
	b = binary.AppendUvarint(b, uint64(len(msg.Node)))
	b = append(b, msg.Node...)
	b = binary.AppendUvarint(b, uint64(len(msg.Vector)))
	for _, e := range msg.Vector {
		b = binary.BigEndian.AppendUint16(b, e.encode())
	}
	return k.sign(b)
}

func (msg *message) flags() byte {
	var f byte
	if msg.Leaving {
		f |= flagLeaving
	}
	if msg.Isolated {
		f |= flagIsolated
	}
	return f
}

// Why a datagram is refused before it is parsed; the reason label values.
var (
	errMalformed  = errors.New("not an ironlb heartbeat of this version")
	errUnknownKey = errors.New("signed with no key this node accepts")
	errBadMAC     = errors.New("MAC does not match")
)

// open checks the datagram's MAC under the key it names and parses it. The
// work before the MAC is checked is bounded by the datagram's size and
// allocation-free: a flood of forged datagrams costs one HMAC each.
func open(b []byte, keys *keyring) (*message, error) {
	if len(b) < headerSize+macSize || string(b[:3]) != string(wireMagic[:]) || b[3] != wireVersion {
		return nil, errMalformed
	}
	k := keys.lookup([4]byte(b[5:9]))
	if k == nil {
		return nil, errUnknownKey
	}
	body, mac := b[:len(b)-macSize], b[len(b)-macSize:]
	if !hmac.Equal(k.mac(body), mac) {
		return nil, errBadMAC
	}
	msg, err := parse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return msg, nil
}

// parse reads a datagram whose MAC was checked.
func parse(b []byte) (*message, error) {
	flags := b[4]
	msg := &message{
		Leaving:     flags&flagLeaving != 0,
		Isolated:    flags&flagIsolated != 0,
		Incarnation: binary.BigEndian.Uint64(b[9:]),
		Seq:         binary.BigEndian.Uint64(b[17:]),
		Sent:        time.UnixMilli(int64(binary.BigEndian.Uint64(b[25:]))),
		MembersHash: binary.BigEndian.Uint64(b[33:]),
	}
	r := b[headerSize:]
	n, w := binary.Uvarint(r)
	if w <= 0 || n == 0 || n > uint64(len(r)-w) {
		return nil, errors.New("bad node name length")
	}
	msg.Node, r = string(r[w:w+int(n)]), r[w+int(n):]
	n, w = binary.Uvarint(r)
	if w <= 0 || n*2 != uint64(len(r)-w) {
		return nil, errors.New("vector length does not match the datagram")
	}
	msg.raw = r[w:]
	return msg, nil
}

// key is one cluster key with its id.
type key struct {
	id     [4]byte
	secret []byte
}

func newKey(secret []byte) *key {
	sum := sha256.Sum256(append([]byte("ironlb heartbeat key id\x00"), secret...))
	return &key{id: [4]byte(sum[:4]), secret: secret}
}

func (k *key) mac(b []byte) []byte {
	h := hmac.New(sha256.New, k.secret)
	h.Write(b)
	return h.Sum(nil)
}

func (k *key) sign(b []byte) []byte { return append(b, k.mac(b)...) }

// keyring is the signing key and the accepted ones; replaced whole, never
// changed in place.
type keyring struct {
	sign   *key
	accept []*key
}

func newKeyring(sign []byte, accept [][]byte) *keyring {
	kr := &keyring{sign: newKey(sign)}
	kr.accept = append(kr.accept, kr.sign)
	for _, a := range accept {
		if k := newKey(a); k.id != kr.sign.id {
			kr.accept = append(kr.accept, k)
		}
	}
	return kr
}

func (kr *keyring) lookup(id [4]byte) *key {
	for _, k := range kr.accept {
		if k.id == id {
			return k
		}
	}
	return nil
}
