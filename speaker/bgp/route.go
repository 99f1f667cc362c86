package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// Route is one prefix this node announces.
type Route struct {
	// Prefix is the announced prefix: a /32 or /128 for a service address,
	// or shorter for an aggregate. Host bits must be zero.
	Prefix netip.Prefix
	// NextHop is this node's address in the prefix's family. It is sent
	// as is, also to eBGP peers, so that a node can announce a next hop
	// other than the session's source address.
	NextHop netip.Addr
	// Communities are standard ("65000:100"), large ("65000:1:2") or
	// well-known communities by name: no-export, no-advertise,
	// no-export-subconfed, no-peer, blackhole, graceful-shutdown.
	Communities []string
	// LocalPref is sent to iBGP peers only; eBGP peers never see it.
	LocalPref *uint32
	// Peers are the names of the peers the route is announced to. A name
	// without a peer is kept: the route goes to that peer once it exists.
	Peers []string
}

// wellKnownCommunities are the RFC 1997, 3765, 7999 and 8326 communities
// by the names operators use for them.
var wellKnownCommunities = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
	"blackhole":           0xFFFF029A,
	"graceful-shutdown":   0xFFFF0000,
}

// largeCommunity is an RFC 8092 community: global administrator (the ASN)
// and two local data parts.
type largeCommunity struct{ global, local1, local2 uint32 }

// communities is a parsed, sorted and de-duplicated community list.
type communities struct {
	standard []uint32
	large    []largeCommunity
}

// parseCommunities parses a route's community strings. The result is
// sorted and without duplicates so that a reordered list is the same
// route and does not cause an UPDATE.
func parseCommunities(in []string) (communities, error) {
	var c communities
	var errs []error
	for _, s := range in {
		s = strings.TrimSpace(s)
		if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
			c.standard = append(c.standard, v)
			continue
		}
		parts := strings.Split(s, ":")
		switch len(parts) {
		case 2:
			hi, err1 := strconv.ParseUint(parts[0], 10, 16)
			lo, err2 := strconv.ParseUint(parts[1], 10, 16)
			if err1 != nil || err2 != nil {
				errs = append(errs, fmt.Errorf("community %q: a standard community is two numbers 0-65535, like 65000:100", s))
				continue
			}
			c.standard = append(c.standard, uint32(hi)<<16|uint32(lo))
		case 3:
			var v [3]uint32
			var bad bool
			for i, p := range parts {
				n, err := strconv.ParseUint(p, 10, 32)
				if err != nil {
					bad = true
					break
				}
				v[i] = uint32(n)
			}
			if bad {
				errs = append(errs, fmt.Errorf("community %q: a large community is three numbers 0-4294967295, like 65000:1:2", s))
				continue
			}
			c.large = append(c.large, largeCommunity{v[0], v[1], v[2]})
		default:
			errs = append(errs, fmt.Errorf("community %q: want ASN:value, ASN:value:value or one of %s", s, strings.Join(wellKnownNames(), ", ")))
		}
	}
	slices.Sort(c.standard)
	c.standard = slices.Compact(c.standard)
	slices.SortFunc(c.large, func(a, b largeCommunity) int {
		return cmp.Or(cmp.Compare(a.global, b.global), cmp.Compare(a.local1, b.local1), cmp.Compare(a.local2, b.local2))
	})
	c.large = slices.Compact(c.large)
	return c, errors.Join(errs...)
}

func wellKnownNames() []string {
	names := make([]string, 0, len(wellKnownCommunities))
	for n := range wellKnownCommunities {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// route is a validated Route in the form the Manager compares and sends.
type route struct {
	prefix      netip.Prefix
	nextHop     netip.Addr
	communities communities
	localPref   *uint32
	peers       []string // sorted, unique
}

// normalizePrefix turns an IPv4-mapped IPv6 prefix into the IPv4 prefix it
// means; it is the key a route is known by.
func normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("invalid or missing prefix")
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("prefix %s has a zone", p)
	}
	if !p.Addr().Is4In6() {
		return p, nil
	}
	if p.Bits() < 96 {
		return netip.Prefix{}, fmt.Errorf("prefix %s: an IPv4-mapped prefix must be /96 or longer", p)
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96), nil
}

// validateRoute checks r and normalizes it: IPv4-mapped addresses become
// IPv4, communities and peers are sorted.
func validateRoute(r Route) (route, error) {
	pfx, err := normalizePrefix(r.Prefix)
	if err != nil {
		return route{}, err
	}
	if pfx.Masked() != pfx {
		return route{}, fmt.Errorf("prefix %s has host bits set (did you mean %s?)", r.Prefix, pfx.Masked())
	}
	nh := r.NextHop.Unmap()
	if !nh.IsValid() {
		return route{}, fmt.Errorf("prefix %s: missing next hop", pfx)
	}
	if nh.Is4() != pfx.Addr().Is4() {
		return route{}, fmt.Errorf("prefix %s: next hop %s is not of the prefix's address family", pfx, nh)
	}
	if nh.Zone() != "" || nh.IsUnspecified() || nh.IsMulticast() || nh.IsLinkLocalUnicast() {
		return route{}, fmt.Errorf("prefix %s: next hop %s is not a global unicast address", pfx, nh)
	}
	comms, err := parseCommunities(r.Communities)
	if err != nil {
		return route{}, fmt.Errorf("prefix %s: %w", pfx, err)
	}
	peers := slices.Clone(r.Peers)
	slices.Sort(peers)
	peers = slices.Compact(peers)
	if slices.Contains(peers, "") {
		return route{}, fmt.Errorf("prefix %s: empty peer name", pfx)
	}
	var lp *uint32
	if r.LocalPref != nil {
		v := *r.LocalPref
		lp = &v
	}
	return route{prefix: pfx, nextHop: nh, communities: comms, localPref: lp, peers: peers}, nil
}

// sameAnnouncement reports whether a and b put the same UPDATE on the
// wire, i.e. whether a peer that has a needs nothing to get b.
func sameAnnouncement(a, b route) bool {
	return a.prefix == b.prefix && a.nextHop == b.nextHop &&
		slices.Equal(a.communities.standard, b.communities.standard) &&
		slices.Equal(a.communities.large, b.communities.large) &&
		(a.localPref == nil) == (b.localPref == nil) &&
		(a.localPref == nil || *a.localPref == *b.localPref)
}

// family is the GoBGP address family of the route.
func (r route) family() *api.Family {
	if r.prefix.Addr().Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// apiPath builds the GoBGP path for r: origin IGP, the next hop (NEXT_HOP
// for IPv4, MP_REACH_NLRI for IPv6), communities and local preference.
// GoBGP adds the AS path per peer and drops LOCAL_PREF towards eBGP peers.
func (r route) apiPath() (*api.Path, error) {
	var nlri bgp.AddrPrefixInterface
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if r.prefix.Addr().Is4() {
		nlri = bgp.NewIPAddrPrefix(uint8(r.prefix.Bits()), r.prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeNextHop(r.nextHop.String()))
	} else {
		nlri = bgp.NewIPv6AddrPrefix(uint8(r.prefix.Bits()), r.prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(r.nextHop.String(), []bgp.AddrPrefixInterface{nlri}))
	}
	if len(r.communities.standard) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(r.communities.standard))
	}
	if len(r.communities.large) > 0 {
		large := make([]*bgp.LargeCommunity, 0, len(r.communities.large))
		for _, c := range r.communities.large {
			large = append(large, bgp.NewLargeCommunity(c.global, c.local1, c.local2))
		}
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}
	if r.localPref != nil {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(*r.localPref))
	}
	path, err := apiutil.NewPath(nlri, false, attrs, timeNow())
	if err != nil {
		return nil, fmt.Errorf("prefix %s: building the BGP path: %w", r.prefix, err)
	}
	return path, nil
}
