package member

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

func sampleMessage(relays int) *message {
	msg := &message{
		Node: "node-worker-01", Incarnation: 0x0123456789abcdef, Seq: 123456,
		Info: map[string]string{"if/eth0": "up", "if/eth1": "down"},
	}
	for i := range relays {
		msg.Heard = append(msg.Heard, relayEntry{
			Node:        fmt.Sprintf("node-worker-%02d", i+2),
			Incarnation: uint64(i) * 0x9e3779b97f4a7c15,
			Age:         time.Duration(i) * 7 * time.Millisecond,
			Info:        map[string]string{"if/eth0": "up"},
		})
	}
	return msg
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, msg := range []*message{
		sampleMessage(3),
		{Node: "n", Incarnation: 1, Seq: 2, Leaving: true},
		{Node: "n", Heard: []relayEntry{{Node: "m", Age: -time.Second}}}, // negative age sent as 0
	} {
		data, n := msg.encode()
		if n != len(msg.Heard) {
			t.Fatalf("encode kept %d of %d relays", n, len(msg.Heard))
		}
		got, err := decode(data)
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", msg, err)
		}
		want := *msg
		want.Heard = nil
		for _, h := range msg.Heard {
			h.Age = max(h.Age, 0)
			want.Heard = append(want.Heard, h)
		}
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, &want)
		}
	}
}

// The documented scale: 30 relayed nodes with 14-character names and an
// interface fact fit in one datagram under maxDatagram.
func TestEncodeSizeBound(t *testing.T) {
	t.Parallel()
	data, n := sampleMessage(30).encode()
	if n != 30 || len(data) > maxDatagram {
		t.Errorf("30 relays: kept %d in %d bytes, want all 30 within %d", n, len(data), maxDatagram)
	}
	t.Logf("30 relays: %d bytes", len(data))

	msg := sampleMessage(200)
	data, n = msg.encode()
	if len(data) > maxDatagram || n < 30 || n >= 200 {
		t.Fatalf("200 relays: kept %d in %d bytes, want a truncated list of at least 30 within %d", n, len(data), maxDatagram)
	}
	got, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	// Truncation keeps the head of the list: the most recently heard.
	if !reflect.DeepEqual(got.Heard, msg.Heard[:n]) {
		t.Errorf("truncated heard list is not the first %d entries", n)
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	t.Parallel()
	data, _ := sampleMessage(3).encode()
	for i := range len(data) {
		if _, err := decode(data[:i]); err == nil {
			t.Errorf("decode of the first %d of %d bytes: no error", i, len(data))
		}
	}
	for name, bad := range map[string][]byte{
		"trailing":  append(append([]byte{}, data...), 0),
		"magic":     append([]byte("XLB"), data[3:]...),
		"version":   append([]byte{'I', 'L', 'B', 2}, data[4:]...),
		"no name":   func() []byte { d, _ := (&message{}).encode(); return d }(),
		"huge list": append(append([]byte{}, data[:len(data)-1]...), 0xff, 0xff, 0xff, 0x7f),
	} {
		if _, err := decode(bad); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzDecode checks that no datagram makes decode panic, and that whatever
// it accepts survives a round trip.
func FuzzDecode(f *testing.F) {
	for _, msg := range []*message{sampleMessage(0), sampleMessage(5), {Node: "x", Leaving: true}} {
		data, _ := msg.encode()
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decode(data)
		if err != nil || len(data) > maxDatagram {
			return
		}
		again, n := msg.encode()
		if n != len(msg.Heard) {
			return // a re-encoding with sorted, deduplicated info can differ in size
		}
		got, err := decode(again)
		if err != nil || !reflect.DeepEqual(got, msg) {
			t.Errorf("round trip of accepted datagram: %+v, %v; want %+v", got, err, msg)
		}
	})
}
