package member

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Wire format of one heartbeat, one UDP datagram. Integers are big-endian
// fixed width or unsigned varints (encoding/binary); a string is a uvarint
// length followed by its bytes; an info map is a uvarint count followed by
// that many key and value strings, keys sorted.
//
//	magic        "ILB" and the version byte (1)
//	flags        1 byte; bit 0: leaving
//	incarnation  8 bytes
//	seq          uvarint
//	node         string
//	info         info map
//	heard        uvarint count, then per entry:
//	               node string, incarnation 8 bytes,
//	               age uvarint (milliseconds since the sender last heard node), info map
//
// A binary format rather than JSON keeps a relayed node at about 12 bytes
// plus its name and encoded info (37 bytes for a 14-character name and
// "if/eth0":"up"), so a heartbeat relaying 30 such nodes takes about 1150
// bytes and stays one unfragmented datagram of at most maxDatagram bytes. The sender truncates the
// heard list to fit (most recently heard first); the own node and info are
// always sent whole, so SetInfo should stay small.
const (
	wireVersion = 1
	// maxDatagram bounds a heartbeat so it is never fragmented on a 1280-byte
	// IPv6 minimum MTU path, with room for the IP and UDP headers.
	maxDatagram = 1200
	flagLeaving = 1 << 0
)

var wireMagic = [3]byte{'I', 'L', 'B'}

// message is one decoded heartbeat.
type message struct {
	Node        string
	Incarnation uint64
	Seq         uint64
	Leaving     bool
	Info        map[string]string
	Heard       []relayEntry
}

// relayEntry is a node the sender heard directly within its Timeout.
type relayEntry struct {
	Node        string
	Incarnation uint64
	// Age is how long before sending the sender last heard Node, so the
	// receiver can expire the report on its own clock instead of trusting it
	// for a full Timeout after it was already old.
	Age  time.Duration
	Info map[string]string
}

// encode returns the datagram for msg and how many of msg.Heard fit in it.
// msg.Heard should be ordered most recently heard first: the tail is dropped
// once the datagram would exceed maxDatagram.
func (msg *message) encode() ([]byte, int) {
	head := make([]byte, 0, maxDatagram)
	head = append(head, wireMagic[:]...)
	head = append(head, wireVersion, msg.flags())
	head = binary.BigEndian.AppendUint64(head, msg.Incarnation)
	head = binary.AppendUvarint(head, msg.Seq)
	head = appendString(head, msg.Node)
	head = appendInfo(head, msg.Info)

	var body []byte
	n := 0
	for _, r := range msg.Heard {
		entry := r.append(nil)
		size := len(head) + uvarintLen(uint64(n+1)) + len(body) + len(entry)
		if size > maxDatagram {
			break
		}
		body = append(body, entry...)
		n++
	}
	head = binary.AppendUvarint(head, uint64(n))
	return append(head, body...), n
}

func (msg *message) flags() byte {
	if msg.Leaving {
		return flagLeaving
	}
	return 0
}

func (r *relayEntry) append(b []byte) []byte {
	b = appendString(b, r.Node)
	b = binary.BigEndian.AppendUint64(b, r.Incarnation)
	b = binary.AppendUvarint(b, uint64(max(r.Age, 0)/time.Millisecond))
	return appendInfo(b, r.Info)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendInfo(b []byte, info map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(info)))
	for _, k := range slices.Sorted(maps.Keys(info)) {
		b = appendString(b, k)
		b = appendString(b, info[k])
	}
	return b
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

// errTruncated reports a datagram that ends inside a field.
var errTruncated = errors.New("truncated heartbeat")

// decode parses a datagram. It never trusts a length or count beyond the
// bytes present, so a hostile or corrupt datagram cannot make it allocate
// more than the datagram's size.
func decode(b []byte) (*message, error) {
	r := reader{b: b}
	if magic := r.bytes(len(wireMagic)); r.err == nil && string(magic) != string(wireMagic[:]) {
		return nil, errors.New("not an ironlb heartbeat")
	}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return nil, fmt.Errorf("unsupported heartbeat version %d", v)
	}
	msg := &message{Leaving: r.byte()&flagLeaving != 0}
	msg.Incarnation = r.uint64()
	msg.Seq = r.uvarint()
	msg.Node = r.string()
	msg.Info = r.info()
	n := r.count()
	for i := 0; i < n && r.err == nil; i++ {
		msg.Heard = append(msg.Heard, relayEntry{
			Node:        r.string(),
			Incarnation: r.uint64(),
			Age:         time.Duration(min(r.uvarint(), uint64(time.Hour/time.Millisecond))) * time.Millisecond,
			Info:        r.info(),
		})
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes after heartbeat", len(r.b))
	}
	if msg.Node == "" {
		return nil, errors.New("heartbeat without a node name")
	}
	return msg, nil
}

// reader consumes a datagram; the first error sticks and later reads return
// zero values, so decode checks once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errTruncated
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a number of following items, each at least one byte long.
func (r *reader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errTruncated
		return 0
	}
	return int(n)
}

func (r *reader) string() string {
	return string(r.bytes(r.count()))
}

func (r *reader) info() map[string]string {
	n := r.count()
	if n == 0 || r.err != nil {
		return nil
	}
	info := make(map[string]string, n)
	for i := 0; i < n && r.err == nil; i++ {
		k := r.string()
		info[k] = r.string()
	}
	return info
}
