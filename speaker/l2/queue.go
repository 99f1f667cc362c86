package l2

import (
	"context"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// receiveQueue is the receive queue, in bytes, asked for each packet socket.
// Every ARP request on the LAN reaches the ARP socket, whatever address it
// asks for; at the kernel's default (about 200 KiB, some hundreds of frames)
// a speaker that the CPU leaves waiting for a fraction of a second on a busy
// LAN loses the newest requests, and their askers get no answer. 4 MiB holds
// thousands of frames.
const receiveQueue = 4 << 20

// dropPoll is how often the kernel's count of dropped frames is read.
const dropPoll = time.Second

// dropLogEvery is the shortest time between two log lines about drops.
const dropLogEvery = 30 * time.Second

// growReceiveQueue asks for a receive queue of size bytes on c:
// SO_RCVBUFFORCE, which needs CAP_NET_ADMIN (the speaker has it), else
// SO_RCVBUF, which the kernel caps at net.core.rmem_max. It returns the size
// the kernel granted (which counts its own overhead: about twice the size
// asked).
func growReceiveQueue(c *packet.Conn, size int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var granted int
	var sockErr error
	err = rc.Control(func(fd uintptr) {
		if sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); sockErr != nil {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if sockErr == nil {
			granted, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}
	})
	if err == nil {
		err = sockErr
	}
	return granted, err
}

// tuneQueue grows c's receive queue and logs what it got; a failure is
// logged and not fatal (the default queue still works on a quiet LAN).
func (r *Responder) tuneQueue(c *packet.Conn, protocol string) {
	granted, err := growReceiveQueue(c, r.receiveQueue)
	if err != nil {
		r.logger.Error(err, "Cannot grow the socket's receive queue; on a busy LAN requests may be dropped unanswered", "protocol", protocol, "asked", r.receiveQueue)
		return
	}
	r.logger.V(2).Info("Socket receive queue", "protocol", protocol, "bytes", granted)
}

// dropCounter keeps the frames a socket's queue dropped: the kernel's count
// (PACKET_STATISTICS, reset on every read) adds to the metric at once, and
// to the log at most every dropLogEvery.
type dropCounter struct {
	unlogged uint64
	lastLog  time.Time
}

// add takes n more drops seen at now and says how many to log now (0:
// nothing to log yet).
func (d *dropCounter) add(n uint64, now time.Time) uint64 {
	d.unlogged += n
	if d.unlogged == 0 || now.Sub(d.lastLog) < dropLogEvery {
		return 0
	}
	logged := d.unlogged
	d.unlogged, d.lastLog = 0, now
	return logged
}

// watchDrops reads the kernel's count of frames each socket's full queue
// dropped, every dropPoll until ctx ends: a dropped request is one nobody
// answered, so it is counted (ironlb_speaker_l2_dropped_total) and logged.
func (r *Responder) watchDrops(ctx context.Context) {
	type watched struct {
		conn     *packet.Conn
		protocol string
		counters counters
		dropCounter
	}
	var socks []*watched
	if r.arpFrames != nil {
		socks = append(socks, &watched{conn: r.arpFrames, protocol: protocolARP, counters: r.arpMetrics})
	}
	if r.ndpFrames != nil {
		socks = append(socks, &watched{conn: r.ndpFrames, protocol: protocolNDP, counters: r.ndpMetrics})
	}
	tick := time.NewTicker(dropPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, s := range socks {
				st, err := s.conn.Stats()
				if err != nil {
					if !r.isClosed() {
						r.logger.V(2).Info("Cannot read the socket's statistics", "protocol", s.protocol, "err", err)
					}
					continue
				}
				s.counters.dropped.Add(float64(st.Drops))
				if n := s.add(uint64(st.Drops), now); n > 0 {
					r.logger.Info("The kernel dropped frames the speaker had no time to read: requests among them went unanswered",
						"protocol", s.protocol, "dropped", n, "queueBytes", r.receiveQueue)
				}
			}
		}
	}
}
