// Package l2 makes service addresses (VIPs) reachable on a LAN by answering
// ARP (IPv4) and NDP (IPv6) for them on one network interface.
//
// A Responder answers for exactly the set of addresses it is given with
// SetAddresses; deciding which node owns which address is the caller's job.
// Addresses new to the set are announced at once and then again on a
// schedule (gratuitous ARP, unsolicited Neighbor Advertisement), so that
// neighbours and switches learn the new owner even if a packet is lost.
//
// # IPv4
//
// ARP requests are read from a packet socket through github.com/mdlayher/arp
// and answered with a unicast reply from the interface's MAC address. The
// library needs an IPv4 address on the interface; without one, IPv4
// answering is unavailable (logged) and IPv6 still works. Announcements are
// broadcast ARP requests with sender IP = target IP = the VIP, the "ARP
// Announcement" of RFC 5227: Linux and most switches update an existing
// entry from such a request, and some devices ignore gratuitous replies.
//
// # IPv6
//
// Neighbour Discovery is where many load balancers go wrong, so this package
// takes care of three things:
//
//   - It joins the solicited-node multicast group of every IPv6 address it
//     answers for (and leaves it when no address maps to it any more), so
//     the NIC accepts the solicitations and switches doing MLD snooping
//     forward them to this node. The memberships are held by an ndp.Conn.
//   - It answers unicast solicitations (neighbour-unreachability probes sent
//     straight to the VIP) as well as multicast ones. The kernel would not
//     hand a unicast solicitation for an address it does not own to an
//     ICMPv6 socket (it would try to forward it), so solicitations are read
//     from a packet socket whose BPF filter passes only ICMPv6 type 135
//     immediately after the IPv6 header. Because that bypasses the kernel's
//     validation, the package repeats it (RFC 4861 section 7.1.1: hop limit
//     255, checksum, code 0, target not multicast, DAD rules).
//   - It answers with a Neighbor Advertisement (Solicited and Override set,
//     Target Link-Layer Address option) to the solicitation's source and
//     Ethernet source, or to ff02::1 with Solicited clear when the source is
//     the unspecified address (Duplicate Address Detection), which makes the
//     VIP fail DAD on any other host that tries to take it. Announcements are
//     unsolicited advertisements to ff02::1 with Override set. Advertisements
//     leave as whole frames on the packet socket, with hop limit 255 and the
//     VIP as IPv6 source like a host that owns the address would send: an
//     ICMPv6 socket (ndp.Conn) cannot use a source that is not a local
//     address, some receivers (ndisc6) ignore an answer from another source,
//     and a frame to the solicitor's MAC depends on neither this node's
//     routes nor its neighbour cache.
//
// # Limitations
//
//   - Solicitations carrying IPv6 extension headers (for example a hop-by-hop
//     header) are not seen: the filter expects ICMPv6 right after the fixed
//     header, which is how every common stack sends them.
//   - One Responder serves one interface. Run one per VLAN sub-interface;
//     802.1Q-tagged frames that reach the parent interface still tagged are
//     dropped.
//   - Sockets are bound to the interface index seen by New. If the interface
//     is deleted and created again, or gains its first IPv4 address later,
//     make a new Responder.
//   - Ethernet-like interfaces only (a 6-byte MAC address).
//
// # Metrics
//
// The package counts, per protocol ("arp" or "ndp") and interface, the
// requests seen for an owned address, the replies sent and the gratuitous
// announcements sent. The counters are prometheus CounterVecs defined here;
// RegisterMetrics adds them to a registry (the speaker's, or
// prometheus.DefaultRegisterer).
package l2
