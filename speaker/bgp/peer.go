package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// Timer defaults: a data-centre profile, where a dead router should be
// noticed in seconds rather than the RFC's minutes.
const (
	DefaultHoldTime      = 9 * time.Second
	DefaultKeepaliveTime = 3 * time.Second
	DefaultConnectTime   = 5 * time.Second
)

// gracefulRestartTime is how long (seconds) a router keeps this node's
// routes while the speaker restarts, when the peer has GracefulRestart.
const gracefulRestartTime = 120

// Peer is one BGP session the node keeps.
type Peer struct {
	// Name identifies the peer (the BGPPeer object's name); unique.
	Name string
	// Address is the router's address; Port its port, 0 for 179.
	Address netip.Addr
	Port    uint16
	// ASN is the router's AS, LocalASN this node's AS on the session.
	// Equal numbers make an iBGP session.
	ASN, LocalASN uint32
	// HoldTime, KeepaliveTime and ConnectTime are whole seconds; 0 means
	// DefaultHoldTime, DefaultKeepaliveTime and DefaultConnectTime.
	// ConnectTime is the wait between connection attempts.
	HoldTime, KeepaliveTime, ConnectTime time.Duration
	// Password is the TCP MD5 signature key (RFC 2385); "" for none.
	Password string
	// EBGPMultihop sends with TTL 255 for a router more than one hop away.
	EBGPMultihop bool
	// SourceAddress, when valid, is the local address of the session.
	SourceAddress netip.Addr
	// GracefulRestart announces the graceful restart capability (RFC
	// 4724), so that the router keeps this node's routes while the speaker
	// restarts (Shutdown leaves them there), up to gracefulRestartTime.
	GracefulRestart bool
	// BFD runs a BFD session beside the BGP session; its settings are not
	// part of the session's configuration: changing them never replaces
	// the BGP session.
	BFD BFD
}

// peerConfig is a validated Peer with the defaults filled in. Two peers
// with equal peerConfigs are the same session; any difference means the
// session is replaced.
type peerConfig struct {
	name                  string
	address               netip.Addr
	port                  uint16
	asn, localASN         uint32
	hold, keepalive, conn uint64 // seconds
	password              string
	multihop              bool
	source                netip.Addr
	gracefulRestart       bool
}

// seconds converts a timer to whole seconds, using def for 0.
func seconds(what string, d, def time.Duration) (uint64, error) {
	if d == 0 {
		d = def
	}
	if d < 0 || d%time.Second != 0 {
		return 0, fmt.Errorf("%s %v is not a positive whole number of seconds", what, d)
	}
	return uint64(d / time.Second), nil
}

// Validate says why SetPeers would refuse p, or nil: the checks of one
// peer alone (not that two peers share a name or an address).
func (p Peer) Validate() error {
	_, err := validatePeer(p)
	return err
}

func validatePeer(p Peer) (peerConfig, error) {
	c := peerConfig{name: p.Name, port: p.Port, asn: p.ASN, localASN: p.LocalASN,
		password: p.Password, multihop: p.EBGPMultihop, gracefulRestart: p.GracefulRestart}
	if p.Name == "" {
		return c, errors.New("peer without a name")
	}
	c.address = p.Address.Unmap()
	if !c.address.IsValid() || c.address.IsUnspecified() || c.address.IsMulticast() {
		return c, fmt.Errorf("peer %s: invalid address %q", p.Name, p.Address)
	}
	if c.address.Zone() != "" {
		// GoBGP would need the zone on every call and in its log keys;
		// link-local (unnumbered) sessions are not supported yet.
		return c, fmt.Errorf("peer %s: address %s has a zone; link-local peers are not supported", p.Name, p.Address)
	}
	if p.ASN == 0 || p.LocalASN == 0 {
		return c, fmt.Errorf("peer %s: ASN and LocalASN must both be set", p.Name)
	}
	var err error
	if c.hold, err = seconds("hold time", p.HoldTime, DefaultHoldTime); err != nil {
		return c, fmt.Errorf("peer %s: %w", p.Name, err)
	}
	if c.keepalive, err = seconds("keepalive time", p.KeepaliveTime, DefaultKeepaliveTime); err != nil {
		return c, fmt.Errorf("peer %s: %w", p.Name, err)
	}
	if c.conn, err = seconds("connect time", p.ConnectTime, DefaultConnectTime); err != nil {
		return c, fmt.Errorf("peer %s: %w", p.Name, err)
	}
	// RFC 4271 4.2: the hold time is 0 or at least three seconds. A
	// keepalive interval not below the hold time would let the session
	// expire between keepalives.
	if c.hold < 3 {
		return c, fmt.Errorf("peer %s: hold time %ds is below the minimum of 3s", p.Name, c.hold)
	}
	if c.keepalive >= c.hold {
		return c, fmt.Errorf("peer %s: keepalive time %ds must be below the hold time %ds", p.Name, c.keepalive, c.hold)
	}
	if p.SourceAddress.IsValid() {
		c.source = p.SourceAddress.Unmap()
		if c.source.Is4() != c.address.Is4() {
			return c, fmt.Errorf("peer %s: source address %s and peer address %s are of different families", p.Name, c.source, c.address)
		}
	}
	if len(p.Password) > 80 {
		// TCP_MD5SIG_MAXKEYLEN in Linux.
		return c, fmt.Errorf("peer %s: password longer than 80 bytes", p.Name)
	}
	return c, nil
}

// families are the address families enabled on every session. Both, on
// every session: a route's family need not be the session's (an IPv4
// session can carry an IPv6 /128 with an IPv6 next hop and vice versa),
// and the router's configuration decides which are negotiated.
var families = []*api.Family{
	{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
}

// apiPeer is the GoBGP configuration of the session, enslaved to vrf, the
// peer's own table (see Manager).
func (c peerConfig) apiPeer(vrf string) *api.Peer {
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: c.address.String(),
			PeerAsn:         c.asn,
			LocalAsn:        c.localASN,
			AuthPassword:    c.password,
			Description:     c.name,
			Vrf:             vrf,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      c.conn,
			HoldTime:          c.hold,
			KeepaliveInterval: c.keepalive,
		}},
		Transport: &api.Transport{RemotePort: uint32(c.port)},
	}
	if c.source.IsValid() {
		p.Transport.LocalAddress = c.source.String()
	}
	if c.multihop {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if c.gracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: gracefulRestartTime}
	}
	for _, f := range families {
		a := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if c.gracefulRestart {
			a.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, a)
	}
	return p
}

// peerChanges is what SetPeers must do to get from the current sessions
// to the desired ones.
type peerChanges struct {
	remove []string     // names of sessions to delete, changed ones included
	add    []peerConfig // sessions to create, changed ones included
}

// diffPeers compares the current sessions with the desired ones. A peer
// whose configuration is unchanged appears in neither list: its session
// is not touched.
func diffPeers(current, desired map[string]peerConfig) peerChanges {
	var ch peerChanges
	for name, cur := range current {
		if want, ok := desired[name]; !ok || want != cur {
			ch.remove = append(ch.remove, name)
		}
	}
	for name, want := range desired {
		if cur, ok := current[name]; !ok || cur != want {
			ch.add = append(ch.add, want)
		}
	}
	sortStrings(ch.remove)
	sortPeers(ch.add)
	return ch
}
