package l2scale

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A heartbeat as speaker/member/wire.go documents it, built and read here
// from that description alone (the test is a LAN host that read the docs,
// not a speaker):
//
//	"ILB" 2 | flags | key id (4) | incarnation (8) | seq (8) | sent ms (8) |
//	members hash (8) | node (uvarint length, bytes) |
//	vector (uvarint count, 2 bytes each) | HMAC-SHA-256 (32)
const (
	wireVersion  = 2
	headerSize   = 3 + 1 + 1 + 4 + 8 + 8 + 8 + 8
	macSize      = sha256.Size
	flagLeaving  = 1 << 0
	entryUnknown = 0xc000 // both flag bits: nothing known of the member
)

type heartbeat struct {
	flags       byte
	keyID       [4]byte
	incarnation uint64
	seq         uint64
	sent        time.Time
	membersHash uint64
	node        string
	vector      []uint16
}

// body is the datagram without its MAC.
func (h heartbeat) body() []byte {
	b := []byte{'I', 'L', 'B', wireVersion, h.flags}
	b = append(b, h.keyID[:]...)
	b = binary.BigEndian.AppendUint64(b, h.incarnation)
	b = binary.BigEndian.AppendUint64(b, h.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(h.sent.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, h.membersHash)
	b = binary.AppendUvarint(b, uint64(len(h.node)))
	b = append(b, h.node...)
	b = binary.AppendUvarint(b, uint64(len(h.vector)))
	for _, e := range h.vector {
		b = binary.BigEndian.AppendUint16(b, e)
	}
	return b
}

// signed is the datagram with a MAC under secret.
func (h heartbeat) signed(secret []byte) []byte {
	b := h.body()
	m := hmac.New(sha256.New, secret)
	m.Write(b)
	return m.Sum(b)
}

// keyIDOf is the id a speaker gives a cluster key (wire.go's newKey).
func keyIDOf(secret []byte) [4]byte {
	sum := sha256.Sum256(append([]byte("ironlb heartbeat key id\x00"), secret...))
	return [4]byte(sum[:4])
}

// parseHeartbeat reads a datagram; its MAC is not checked (the test does
// not know the key).
func parseHeartbeat(b []byte) (heartbeat, error) {
	if len(b) < headerSize+macSize || string(b[:3]) != "ILB" || b[3] != wireVersion {
		return heartbeat{}, errors.New("not a heartbeat of version 2")
	}
	h := heartbeat{
		flags:       b[4],
		keyID:       [4]byte(b[5:9]),
		incarnation: binary.BigEndian.Uint64(b[9:]),
		seq:         binary.BigEndian.Uint64(b[17:]),
		sent:        time.UnixMilli(int64(binary.BigEndian.Uint64(b[25:]))),
		membersHash: binary.BigEndian.Uint64(b[33:]),
	}
	r := b[headerSize : len(b)-macSize]
	n, w := binary.Uvarint(r)
	if w <= 0 || n > uint64(len(r)-w) {
		return heartbeat{}, errors.New("bad node name length")
	}
	h.node, r = string(r[w:w+int(n)]), r[w+int(n):]
	n, w = binary.Uvarint(r)
	if w <= 0 || 2*n != uint64(len(r)-w) {
		return heartbeat{}, fmt.Errorf("vector of %d entries in %d bytes", n, len(r)-w)
	}
	for i := 0; i < int(n); i++ {
		h.vector = append(h.vector, binary.BigEndian.Uint16(r[w+2*i:]))
	}
	return h, nil
}

// forged is a heartbeat in the name of node, fresh by its numbers (a new
// incarnation, a sequence number and send time of now), with members
// entries that know nothing.
func forged(node string, flags byte, keyID [4]byte, membersHash uint64, members int) heartbeat {
	now := time.Now()
	v := make([]uint16, members)
	for i := range v {
		v[i] = entryUnknown
	}
	return heartbeat{flags: flags, keyID: keyID, incarnation: uint64(now.UnixMilli()) + 1000, seq: 1 << 40,
		sent: now, membersHash: membersHash, node: node, vector: v}
}
