package member

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"
)

func sample(n int) *message {
	msg := &message{
		Node: nodeName(17), Incarnation: 1_700_000_000_123, Seq: 42, Sent: time.UnixMilli(1_700_000_001_000),
		Isolated: true, MembersHash: 0xfeedface, Vector: make([]entry, n),
	}
	for i := range msg.Vector {
		switch i % 4 {
		case 0:
			msg.Vector[i] = entry{Known: true, Beat: uint16(i * 977 % (1 << beatBits))}
		case 1:
			msg.Vector[i] = entry{}
		case 2:
			msg.Vector[i] = entry{Known: true, Beat: beatMask, Leaving: true}
		case 3:
			msg.Vector[i] = entry{Known: true, Isolated: true}
		}
	}
	return msg
}

func TestWireRoundTrip(t *testing.T) {
	kr := newKeyring(testKey, nil)
	msg := sample(30)
	got, err := open(msg.encode(kr.sign), kr)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if got.Node != msg.Node || got.Incarnation != msg.Incarnation || got.Seq != msg.Seq || !got.Sent.Equal(msg.Sent) ||
		got.Isolated != msg.Isolated || got.Leaving != msg.Leaving || got.MembersHash != msg.MembersHash || got.vectorLen() != len(msg.Vector) {
		t.Fatalf("round trip: got %+v, want %+v", got, msg)
	}
	for i := range msg.Vector {
		if got.vectorAt(i) != msg.Vector[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got.vectorAt(i), msg.Vector[i])
		}
	}
}

// Beats are ordered across the wrap-around of their 14 bits, so a member's
// word keeps rising however long it runs.
func TestBeatOrder(t *testing.T) {
	for _, tc := range []struct {
		a, b  uint16
		newer bool
		diff  time.Duration
	}{
		{5, 4, true, beatUnit},
		{4, 5, false, -beatUnit},
		{4, 4, false, 0},
		{0, beatMask, true, beatUnit},
		{beatMask, 0, false, -beatUnit},
		{100, 100 + 1<<(beatBits-1) + 1, true, (1<<(beatBits-1) - 1) * beatUnit},
	} {
		if got := newer(tc.a, tc.b); got != tc.newer {
			t.Errorf("newer(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.newer)
		}
		if got := beatsBetween(tc.a, tc.b); got != tc.diff {
			t.Errorf("beatsBetween(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.diff)
		}
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	if !newer(beatAt(t0.Add(beatUnit)), beatAt(t0)) || newer(beatAt(t0), beatAt(t0.Add(beatUnit))) {
		t.Errorf("beats of a clock that moves on 10 ms are not newer")
	}
}

// A heartbeat of a 500-member cluster with realistic names stays one
// unfragmented datagram on a 1,280-byte IPv6 path.
func TestHeartbeatOf500FitsOneDatagram(t *testing.T) {
	msg := sample(500)
	if n := len(msg.encode(newKey(testKey))); n > 1200 {
		t.Fatalf("heartbeat of 500 members is %d bytes, want at most 1200", n)
	}
}

// Every damage to a datagram is refused before it is believed: a wrong key
// by its id, a changed byte by the MAC, a cut datagram by its length.
func TestOpenRefusesDamage(t *testing.T) {
	kr := newKeyring(testKey, nil)
	good := sample(10).encode(kr.sign)
	other := sample(10).encode(newKey([]byte(strings.Repeat("x", 32))))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-macSize-1] ^= 1
	unsigned := good[:len(good)-macSize]
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":        {nil, errMalformed},
		"garbage":      {[]byte(strings.Repeat("z", 200)), errMalformed},
		"unsigned":     {unsigned, errBadMAC},
		"other key":    {other, errUnknownKey},
		"flipped byte": {flipped, errBadMAC},
		"truncated":    {good[:headerSize+3], errMalformed},
	} {
		if _, err := open(tc.b, kr); !errors.Is(err, tc.want) {
			t.Errorf("%s: open = %v, want %v", name, err, tc.want)
		}
	}
}

// handled feeds datagrams to a Members that is not running, so every
// decision is visible and nothing races.
type handled struct {
	t     *testing.T
	m     *Members
	addrs map[string]netip.AddrPort
}

func newHandled(t *testing.T) *handled {
	addrs := map[string]netip.AddrPort{}
	for i, n := range nodeNames(4) {
		addrs[n] = netip.AddrPortFrom(loopback(70, i), DefaultPort)
	}
	self := nodeName(1)
	m, err := New(Config{Node: self, Bind: freeAddr(t, loopback(70, 10)), Key: testKey,
		Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.conn.Close() })
	m.SetPeers(addrs)
	return &handled{t: t, m: m, addrs: addrs}
}

// datagram is a heartbeat from node, signed under secret.
func (h *handled) datagram(node string, seq uint64, sent time.Time, leaving bool, secret []byte) []byte {
	msg := &message{Node: node, Incarnation: 100, Seq: seq, Sent: sent, Leaving: leaving,
		MembersHash: h.m.topo.hash, Vector: make([]entry, len(h.m.topo.names))}
	return msg.encode(newKey(secret))
}

// feed delivers b from from and returns by how much the counter of reason rose.
func (h *handled) feed(from netip.AddrPort, b []byte, reason string) float64 {
	before := testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reason))
	h.m.handle(from, b, time.Now())
	return testutil.ToFloat64(heartbeatsRejected.WithLabelValues(reason)) - before
}

func (h *handled) alive(node string) bool {
	_, ok := h.m.View().Alive[node]
	return ok
}

// Forged, replayed and misdirected heartbeats change nothing and are
// counted by reason; a genuine one is believed.
func TestHandleRefusesForgeries(t *testing.T) {
	h := newHandled(t)
	b := nodeName(2)
	from := h.addrs[b]
	now := time.Now()
	wrongKey := []byte(strings.Repeat("k", 32))

	if d := h.feed(from, h.datagram(b, 1, now, false, wrongKey), reasonUnknownKey); d != 1 || h.alive(b) {
		t.Fatalf("a heartbeat under an unknown key: counted %v, alive=%v", d, h.alive(b))
	}
	genuine := h.datagram(b, 1, now, false, testKey)
	h.m.handle(from, genuine, now)
	if !h.alive(b) {
		t.Fatalf("a genuine heartbeat was not believed")
	}
	if d := h.feed(from, genuine, reasonReplay); d != 1 {
		t.Errorf("a replayed heartbeat: counted %v as replay", d)
	}
	if d := h.feed(h.addrs[nodeName(3)], h.datagram(b, 2, now, false, testKey), reasonWrongAddress); d != 1 {
		t.Errorf("a heartbeat from another member's address: counted %v", d)
	}
	if d := h.feed(from, h.datagram(b, 3, now.Add(-time.Hour), false, testKey), reasonClock); d != 1 {
		t.Errorf("an hour-old heartbeat: counted %v", d)
	}
	if d := h.feed(from, h.datagram(nodeName(99), 1, now, false, testKey), reasonUnknownPeer); d != 1 {
		t.Errorf("a heartbeat of a node that is no member: counted %v", d)
	}
	if d := h.feed(from, h.datagram(b, 4, now, true, wrongKey), reasonUnknownKey); d != 1 || !h.alive(b) {
		t.Errorf("a forged leaving heartbeat: counted %v, alive=%v", d, h.alive(b))
	}
	if d := h.feed(from, h.datagram(b, 5, now, true, testKey), reasonReplay); d != 0 || h.alive(b) {
		t.Errorf("a genuine leaving heartbeat: alive=%v", h.alive(b))
	}
}

// During a rotation both keys are accepted; after it, only the new one.
func TestKeyRotation(t *testing.T) {
	h := newHandled(t)
	b := nodeName(2)
	from := h.addrs[b]
	newSecret := []byte(strings.Repeat("n", 32))
	if err := h.m.SetKeys(testKey, [][]byte{newSecret}); err != nil {
		t.Fatal(err)
	}
	if d := h.feed(from, h.datagram(b, 1, time.Now(), false, newSecret), reasonUnknownKey); d != 0 || !h.alive(b) {
		t.Fatalf("step 1: the new key is not accepted (counted %v)", d)
	}
	if err := h.m.SetKeys(newSecret, [][]byte{testKey}); err != nil {
		t.Fatal(err)
	}
	if d := h.feed(from, h.datagram(b, 2, time.Now(), false, testKey), reasonUnknownKey); d != 0 {
		t.Fatalf("step 2: the old key is not accepted any more")
	}
	if err := h.m.SetKeys(newSecret, nil); err != nil {
		t.Fatal(err)
	}
	if d := h.feed(from, h.datagram(b, 3, time.Now(), false, testKey), reasonUnknownKey); d != 1 {
		t.Fatalf("step 3: the old key is still accepted")
	}
}
