package l2

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"k8s.io/klog/v2"
)

func TestDropCounter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		n     uint64
		at    time.Duration
		wantN uint64
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing dropped logs nothing", []step{{0, 0, 0}, {0, time.Minute, 0}}},
		{"the first drops are logged at once", []step{{3, 0, 3}}},
		{"drops within the pause wait for it, then are logged together", []step{
			{3, 0, 3}, {2, time.Second, 0}, {4, 10 * time.Second, 0}, {0, 31 * time.Second, 6}}},
		{"a quiet stretch logs nothing, the next drop is logged at once", []step{
			{1, 0, 1}, {0, 40 * time.Second, 0}, {5, 41 * time.Second, 5}}},
		{"exactly the pause later is soon enough", []step{{1, 0, 1}, {1, dropLogEvery, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d dropCounter
			for i, s := range tc.steps {
				if got := d.add(s.n, t0.Add(s.at)); got != s.wantN {
					t.Errorf("step %d (+%d at %v): logs %d, want %d", i, s.n, s.at, got, s.wantN)
				}
			}
		})
	}
}

// testEtherType is an EtherType for local experiments (IEEE 802 local
// experimental 1): nothing on the host listens for it.
const testEtherType = 0x88b5

// TestReceiveQueueAndDrops runs on the host's loopback interface with real
// packet sockets (root): the queue the speaker asks for is granted, and
// frames a full queue drops are counted in ironlb_speaker_l2_dropped_total.
func TestReceiveQueueAndDrops(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (packet sockets); run the unit tests as root")
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	listen := func() *packet.Conn {
		c, err := packet.Listen(lo, packet.Raw, testEtherType, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	t.Run("granted", func(t *testing.T) {
		granted, err := growReceiveQueue(listen(), receiveQueue)
		if err != nil {
			t.Fatal(err)
		}
		if granted < receiveQueue {
			t.Errorf("receive queue %d bytes, asked %d", granted, receiveQueue)
		}
	})

	t.Run("drops counted", func(t *testing.T) {
		// A queue that holds a few frames, and a reader that does not read:
		// as a speaker the CPU left waiting.
		r := newResponder(lo, klog.Background(), config{receiveQueue: 1})
		r.arpFrames = listen()
		r.tuneQueue(r.arpFrames, protocolARP)
		before := value(r.arpMetrics.dropped)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.watchDrops(ctx) }()
		defer func() { cancel(); <-done }()

		sender := listen()
		frame, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: net.HardwareAddr{2, 0, 0, 0, 0, 1},
			EtherType: testEtherType, Payload: make([]byte, 46)}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		const sent = 500
		for range sent {
			if _, err := sender.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(5 * dropPoll)
		for value(r.arpMetrics.dropped) == before && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		dropped := value(r.arpMetrics.dropped) - before
		if dropped <= 0 || dropped > sent {
			t.Errorf("%v frames counted dropped of %d sent to a queue of a few frames nobody read, want some and at most all", dropped, sent)
		}
	})
}
