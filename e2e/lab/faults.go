package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Faults of the network a test injects on a node: a firewall that drops a
// UDP port, a LAN host that forges its source address, and a look at what a
// node receives.

// faultTable is the nftables table the lab's firewall faults live in, apart
// from kube-proxy's own tables.
const faultTable = "ironlb-lab-fault"

// BlockUDP drops, in node n's namespace, UDP datagrams to port that arrive
// (in) and that leave (out), as a host firewall would; it replaces what an
// earlier BlockUDP on the node set. Neither direction is UnblockUDP.
func (l *Lab) BlockUDP(ctx context.Context, n, port int, in, out bool) error {
	var rules strings.Builder
	// add+delete: a table that is not there yet is no error.
	fmt.Fprintf(&rules, "add table inet %s\ndelete table inet %s\n", faultTable, faultTable)
	if in || out {
		fmt.Fprintf(&rules, "table inet %s {\n", faultTable)
		if in {
			fmt.Fprintf(&rules, "  chain in { type filter hook input priority -300; policy accept; udp dport %d drop; }\n", port)
		}
		if out {
			fmt.Fprintf(&rules, "  chain out { type filter hook output priority -300; policy accept; udp dport %d drop; }\n", port)
		}
		rules.WriteString("}\n")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.NodeNS(n), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules.String())
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", l.NodeNS(n), err, strings.TrimSpace(string(b)))
	}
	return nil
}

// UnblockUDP removes what BlockUDP set on node n.
func (l *Lab) UnblockUDP(ctx context.Context, n int) error {
	return l.BlockUDP(ctx, n, 0, false, false)
}

// SendUDPFrom sends each payload as one IPv4 UDP datagram from namespace ns
// with the source address and port src, whoever holds it: a host on the LAN
// that forges its source, as anyone with a raw socket can. The UDP checksum
// is left out (zero), which IPv4 allows.
func SendUDPFrom(ns string, src, dst netip.AddrPort, payloads ...[]byte) error {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return errors.New("SendUDPFrom: IPv4 only")
	}
	fd := -1
	err := inNamespace(ns, func() error {
		var err error
		// IPPROTO_RAW: this socket writes the IP header itself.
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return fmt.Errorf("raw socket in %s: %w", ns, err)
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	for _, payload := range payloads {
		pkt := make([]byte, 20+8+len(payload))
		pkt[0] = 0x45 // IPv4, 20-byte header
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[8] = 64 // TTL
		pkt[9] = syscall.IPPROTO_UDP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(pkt[12:16], s[:])
		copy(pkt[16:20], d[:])
		binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
		u := pkt[20:]
		binary.BigEndian.PutUint16(u[0:], src.Port())
		binary.BigEndian.PutUint16(u[2:], dst.Port())
		binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
		copy(u[8:], payload)
		if err := syscall.Sendto(fd, pkt, 0, to); err != nil {
			return fmt.Errorf("send from %s to %s in %s: %w", src, dst, ns, err)
		}
	}
	return nil
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Datagram is one UDP datagram as received.
type Datagram struct {
	Src, Dst netip.AddrPort
	Payload  []byte
}

// CaptureUDP returns the first IPv4 UDP datagram to port that namespace ns
// receives within d, as tcpdump in that namespace would see it.
func CaptureUDP(ns string, port uint16, d time.Duration) (Datagram, error) {
	fd := -1
	err := inNamespace(ns, func() error {
		var err error
		// A raw UDP socket gets a copy of every UDP datagram the
		// namespace receives, IP header included.
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
		return err
	})
	if err != nil {
		return Datagram{}, fmt.Errorf("raw socket in %s: %w", ns, err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return Datagram{}, err
	}
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return Datagram{}, err
		}
		p := buf[:n]
		if n < 20 || p[0]>>4 != 4 {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != port {
			continue
		}
		u := p[ihl:]
		return Datagram{
			Src:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(u[0:])),
			Dst:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(u[2:])),
			Payload: append([]byte(nil), u[8:]...),
		}, nil
	}
	return Datagram{}, fmt.Errorf("no UDP datagram to port %d in %s within %v", port, ns, d)
}

// UDPReceiveDrops is how many UDP datagrams namespace ns's kernel dropped
// because a socket's receive buffer was full (RcvbufErrors of
// /proc/net/snmp): datagrams that never reached the process they were for.
func UDPReceiveDrops(ctx context.Context, ns string) (int, error) {
	out, err := Exec(ctx, ns, "cat", "/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(fields) {
				return strconv.Atoi(fields[i])
			}
		}
	}
	return 0, fmt.Errorf("no Udp RcvbufErrors in /proc/net/snmp of %s", ns)
}
