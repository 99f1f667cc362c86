package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ARPProbe asks from the LAN client who has many IPv4 addresses at once:
// one ARP request per address from a raw socket, and every reply to it
// collected for a while, as AnsweringMACs does for one address with arping.
// A test that watches a hundred addresses several times a second cannot
// start a hundred arpings each time.
//
// Each round asks from a sender address of its own (Plan.probeSender, in
// turn), and a reply counts only for the round whose sender it is addressed
// to: a late answer to an earlier question is never taken for a second node
// answering this one. Rounds may overlap (Begin, End), as a client that asks
// again before its last question's time is up.
type ARPProbe struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	plan    Plan

	mu     sync.Mutex
	rounds int
	open   map[[4]byte]*ARPRound // by sender, the rounds begun and not ended
	// dropped counts the frames the socket's full queue dropped (its
	// kernel count is reset on every read); late, the answers that came
	// for a round already over.
	dropped, late int
	done          chan struct{}
	closed        bool
}

// ARPRound is one round of questions, from Begin to End.
type ARPRound struct {
	p      *ARPProbe
	sender [4]byte
	want   map[[4]byte]netip.Addr
	seen   map[netip.Addr][]net.HardwareAddr
}

// probeQueue is the receive queue of the probe's socket, in bytes.
const probeQueue = 8 << 20

const (
	ethPARP     = 0x0806
	ethPIPv4    = 0x0800
	arpFrameLen = 14 + 28
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenARPProbe opens an ARPProbe on the LAN client's eth0.
func (l *Lab) OpenARPProbe() (*ARPProbe, error) {
	p := &ARPProbe{plan: l.Plan, done: make(chan struct{}), fd: -1, open: map[[4]byte]*ARPRound{}}
	err := inNamespace(l.ClientNS(), func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		p.ifindex, p.mac = ifi.Index, ifi.HardwareAddr
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, int(htons(ethPARP)))
		if err != nil {
			return fmt.Errorf("ARP socket: %w", err)
		}
		p.fd = fd
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind ARP socket to eth0: %w", err)
		}
		// A round's hundred answers arrive at once, and the test process
		// may wait for a CPU: the queue holds thousands of frames, and the
		// frames this socket sends itself are not queued back to it.
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, probeQueue); err != nil {
			return fmt.Errorf("ARP socket receive queue: %w", err)
		}
		if err := syscall.SetsockoptInt(fd, syscall.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return fmt.Errorf("ARP socket: ignoring outgoing frames: %w", err)
		}
		// Reads wake up now and then, so Close can end the reader.
		tv := syscall.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		return syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if p.fd >= 0 {
			syscall.Close(p.fd)
		}
		return nil, fmt.Errorf("ARP probe in %s: %w", l.ClientNS(), err)
	}
	go p.read()
	return p, nil
}

// Dropped is how many frames (answers among them) the probe's socket
// dropped so far because its queue was full, and Late how many answers
// came after their round was over: rounds that ended meanwhile may show
// addresses dark that were answered, or answered late.
func (p *ARPProbe) Dropped() (dropped, late int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped, p.late
}

// Close stops the probe.
func (p *ARPProbe) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	<-p.done
	syscall.Close(p.fd)
}

func (p *ARPProbe) read() {
	defer close(p.done)
	buf := make([]byte, 1500)
	for {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		n, _, err := syscall.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		p.take(buf[:n])
	}
}

// take records an ARP reply to the running round.
func (p *ARPProbe) take(f []byte) {
	if len(f) < arpFrameLen || binary.BigEndian.Uint16(f[12:]) != ethPARP {
		return
	}
	a := f[14:]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != ethPIPv4 || a[4] != 6 || a[5] != 4 ||
		binary.BigEndian.Uint16(a[6:]) != 2 || !slices.Equal(a[18:24], p.mac) {
		return
	}
	mac := net.HardwareAddr(slices.Clone(a[8:14]))
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.open[[4]byte(a[24:28])]
	if r == nil {
		if p.plan.isProbeSender(netip.AddrFrom4([4]byte(a[24:28]))) {
			p.late++
		}
		return
	}
	addr, ok := r.want[[4]byte(a[14:18])]
	if !ok {
		return
	}
	for _, m := range r.seen[addr] {
		if slices.Equal(m, mac) {
			return
		}
	}
	r.seen[addr] = append(r.seen[addr], mac)
}

// Ask sends one ARP request for each IPv4 address and returns every
// distinct MAC that answered each of them within wait of the last request
// (none: nobody answered; two or more: split brain).
func (p *ARPProbe) Ask(addrs []netip.Addr, wait time.Duration) (map[netip.Addr][]net.HardwareAddr, error) {
	r, err := p.Begin(addrs)
	if err != nil {
		return nil, err
	}
	time.Sleep(wait)
	return r.End()
}

// Begin sends one ARP request for each IPv4 address, from a sender address
// no other open round uses, and takes the answers until End.
func (p *ARPProbe) Begin(addrs []netip.Addr) (*ARPRound, error) {
	r := &ARPRound{p: p, want: map[[4]byte]netip.Addr{}, seen: map[netip.Addr][]net.HardwareAddr{}}
	for _, a := range addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("ARP probe: %s is not an IPv4 address", a)
		}
		r.want[a.As4()] = a
	}
	p.mu.Lock()
	r.sender = p.plan.probeSender(p.rounds).As4()
	if p.closed || p.open[r.sender] != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("ARP probe closed, or %d rounds open at once (sender %v still in use)", len(p.open), netip.AddrFrom4(r.sender))
	}
	p.rounds++
	p.open[r.sender] = r
	p.mu.Unlock()

	to := &syscall.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: p.ifindex, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	frame := make([]byte, arpFrameLen)
	copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:12], p.mac)
	binary.BigEndian.PutUint16(frame[12:], ethPARP)
	a := frame[14:]
	binary.BigEndian.PutUint16(a[0:], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:], ethPIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], p.mac)
	copy(a[14:18], r.sender[:])
	for _, addr := range addrs {
		t := addr.As4()
		copy(a[24:28], t[:])
		if err := syscall.Sendto(p.fd, frame, 0, to); err != nil {
			_, _ = r.End()
			return nil, fmt.Errorf("ARP request for %s: %w", addr, err)
		}
	}
	return r, nil
}

// End stops taking answers for the round and returns every distinct MAC
// that answered each address (none: nobody answered; two or more: split
// brain).
func (r *ARPRound) End() (map[netip.Addr][]net.HardwareAddr, error) {
	p := r.p
	stats, err := unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.open, r.sender)
	if err != nil {
		return nil, fmt.Errorf("ARP socket statistics: %w", err)
	}
	p.dropped += int(stats.Drops)
	out := make(map[netip.Addr][]net.HardwareAddr, len(r.seen))
	for addr, macs := range r.seen {
		out[addr] = slices.Clone(macs)
	}
	return out, nil
}
