// Package bfd detects within a second that the path to a BGP peer is down,
// by Bidirectional Forwarding Detection in asynchronous mode (RFC 5880),
// single hop (RFC 5881) or multihop (RFC 5883), over IPv4 and IPv6.
//
// The protocol is decided in a pure state machine (machine.go): it reads no
// clock and opens no socket; packets and timer ticks come in with their
// time, and packets to send and state changes go out as values, so every
// rule of RFC 5880 §6.8 is tested in a table. The jitter of the transmit
// interval comes from an injected random source for the same reason.
//
// A Session runs one machine. Sessions are made by a Mux, the one owner of
// what they share: the listeners, one per local address and port, which
// demultiplex by Your Discriminator, or by the peer's address before the
// peer knows it; the discriminators; and the metrics. The package keeps no
// state of its own, so a process makes one Mux and closes it after its
// sessions, and each test makes its own. Each session sends from a source
// port of its own. Single hop sessions send with TTL 255 and accept
// only packets that arrive with TTL 255, so no packet from beyond the link
// can reach them; multihop sessions skip that check.
//
// A peer that goes Down because the other end said AdminDown reports
// Change.RemoteAdminDown: the peer is shutting down on purpose (Shutdown
// sends that before a speaker ends its BGP sessions), which callers must
// not count as a failure of the path. Nor is every Down the peer says: its
// packet came through, and Change.RemoteDiag (Diag.PathFailed) tells
// whether the peer no longer hears this end or merely ended its session.
package bfd
