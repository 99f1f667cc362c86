package speaker

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// A speaker's work follows what changed. The plans are built from parts:
// what each Service says about each of its addresses (its pool, the nodes
// that may answer or announce it, and why none may). A part reads the
// Service, its endpoints and the world: the nodes, the pools, the BGP peers
// and the live speakers with their interfaces. The planner keeps the parts
// of the last sync. A sync after one Service (or its endpoints) changed
// computes that Service's part and rebuilds its addresses only; an address
// whose record of owner changed gets its owner again; a change of the world
// starts every part over. Services from one pool without
// externalTrafficPolicy Local share one part per pool, so even that costs
// one eligibility check per pool, not per Service.

// planner holds the parts and the plans they make. Only sync uses it.
type planner struct {
	world        string // worldKey of the parts
	parts        map[types.NamespacedName]*servicePart
	byAddr       map[netip.Addr][]types.NamespacedName // the Services that hold an address, in name order
	shared       map[string]*addrPart                  // by pool: the part of Services without local endpoints
	l2           map[netip.Addr]*announcement
	bgp          map[netip.Addr]*advertisement
	notAnnounced map[types.NamespacedName]string

	computed int // Service parts computed by the last plan (a metric, and tests)
}

// servicePart is what one Service says about its addresses.
type servicePart struct {
	// version and sliceVersions are the resource versions of the Service
	// and its kept EndpointSlices it was computed from (current).
	version       string
	sliceVersions []string
	addrs         []addrOf // a Service has one address per family, so a list is smaller than a map
	// notAnnounced says why some of its addresses are announced in no way.
	notAnnounced string
}

// addrOf is a Service's part for one of its addresses.
type addrOf struct {
	addr netip.Addr
	part *addrPart
}

// of is the part for addr.
func (part *servicePart) of(addr netip.Addr) *addrPart {
	for _, a := range part.addrs {
		if a.addr == addr {
			return a.part
		}
	}
	return nil
}

// addrPart is what one Service says about one address: the pool it comes
// from, and the nodes that may answer (L2) or announce it (BGP), or why
// none may. Parts are shared and never changed once built.
type addrPart struct {
	pool *v1alpha1.IPPool

	l2Nodes map[string]bool
	l2Why   string
	missing map[string]string // nodes the pool selects that lack its interfaces

	bgpNodes map[string]bool
	bgpList  []string // bgpNodes, sorted
	bgpWhy   string
	peersOf  map[string][]string // eligible node -> BGPPeers it sends to
}

func newPlanner() *planner {
	p := &planner{}
	p.reset("")
	return p
}

func (p *planner) reset(world string) {
	p.world = world
	p.parts = map[types.NamespacedName]*servicePart{}
	p.byAddr = map[netip.Addr][]types.NamespacedName{}
	p.shared = map[string]*addrPart{}
	p.l2 = map[netip.Addr]*announcement{}
	p.bgp = map[netip.Addr]*advertisement{}
	p.notAnnounced = map[types.NamespacedName]string{}
}

// plan brings the plans up to date with in and peers and returns them: the
// L2 announcements, the Services announced in no way (with why) and the
// BGP advertisements. The maps returned are the caller's; the
// announcements in them are shared and must not be changed.
func (p *planner) plan(in inputs, peers []*v1alpha1.BGPPeer) (map[netip.Addr]*announcement, map[types.NamespacedName]string, map[netip.Addr]*advertisement) {
	if w := worldKey(in, peers); w != p.world {
		p.reset(w)
	}
	p.computed = 0
	dirty := map[netip.Addr]bool{}
	seen := make(map[types.NamespacedName]bool, len(in.services))
	for _, svc := range in.services {
		key := svc.key()
		seen[key] = true
		if old := p.parts[key]; old != nil && old.current(svc, in.slices[key]) {
			continue
		}
		p.forget(key, dirty)
		part := p.partOf(in, peers, svc)
		part.version = svc.ResourceVersion
		for _, es := range in.slices[key] {
			part.sliceVersions = append(part.sliceVersions, es.ResourceVersion)
		}
		p.computed++
		p.parts[key] = part
		for _, a := range part.addrs {
			keys := p.byAddr[a.addr]
			i, _ := slices.BinarySearchFunc(keys, key, compareKeys)
			p.byAddr[a.addr] = slices.Insert(keys, i, key)
			dirty[a.addr] = true
		}
		if part.notAnnounced != "" {
			p.notAnnounced[key] = part.notAnnounced
		}
	}
	for key := range p.parts {
		if !seen[key] {
			p.forget(key, dirty)
		}
	}
	for addr := range dirty {
		p.rebuild(addr, in)
	}
	for addr, a := range p.l2 {
		if !dirty[addr] && a.recorded != in.recorded[addr] {
			p.rebuild(addr, in)
		}
	}
	return maps.Clone(p.l2), maps.Clone(p.notAnnounced), maps.Clone(p.bgp)
}

// forget removes key's part, marking its addresses dirty.
func (p *planner) forget(key types.NamespacedName, dirty map[netip.Addr]bool) {
	old := p.parts[key]
	if old == nil {
		return
	}
	for _, a := range old.addrs {
		keys := slices.DeleteFunc(p.byAddr[a.addr], func(k types.NamespacedName) bool { return k == key })
		if len(keys) == 0 {
			delete(p.byAddr, a.addr)
		} else {
			p.byAddr[a.addr] = keys
		}
		dirty[a.addr] = true
	}
	delete(p.parts, key)
	delete(p.notAnnounced, key)
}

// rebuild makes addr's announcement and advertisement again from the parts
// of the Services that hold it, in name order.
func (p *planner) rebuild(addr netip.Addr, in inputs) {
	keys := p.byAddr[addr]
	var l2Keys, bgpKeys []types.NamespacedName
	var l2Parts, bgpParts []*addrPart
	for _, key := range keys {
		part := p.parts[key].of(addr)
		if part.pool.Spec.L2 != nil {
			l2Keys, l2Parts = append(l2Keys, key), append(l2Parts, part)
		}
		if part.pool.Spec.BGP != nil {
			bgpKeys, bgpParts = append(bgpKeys, key), append(bgpParts, part)
		}
	}
	delete(p.l2, addr)
	delete(p.bgp, addr)
	if len(l2Parts) > 0 {
		a := l2Announcement(addr, l2Keys, l2Parts, in)
		a.outside = outsidePool(a.poolObj, addr)
		p.l2[addr] = a
	}
	if len(bgpParts) > 0 {
		a := bgpAdvertisement(addr, bgpKeys, bgpParts)
		a.outside = outsidePool(bgpParts[0].pool, addr)
		p.bgp[addr] = a
	}
}

// partOf computes what svc says about its addresses.
func (p *planner) partOf(in inputs, peers []*v1alpha1.BGPPeer, svc *lbService) *servicePart {
	part := &servicePart{}
	var notes []string
	for _, addr := range svc.addrs {
		if part.of(addr) != nil {
			continue // written twice in the status
		}
		if notIronlbs(svc, addr) {
			notes = append(notes, fmt.Sprintf("%s is not an address ironlb-ccm allocated to this Service (%s names %s): another controller wrote it",
				addr, v1alpha1.AnnotationAllocatedAddresses, joinAddrs(svc.record)))
			continue
		}
		pool := poolOf(in.pools, svc, addr)
		switch {
		case pool == nil && svc.allocatedFrom != "":
			notes = append(notes, fmt.Sprintf("%s is in no IPPool, and IPPool %s it was allocated from does not exist", addr, svc.allocatedFrom))
		case pool == nil:
			notes = append(notes, fmt.Sprintf("%s is in no IPPool", addr))
		case pool.Spec.L2 == nil && pool.Spec.BGP == nil:
			notes = append(notes, fmt.Sprintf("IPPool %s has neither l2 nor bgp: %s is allocated but not announced", pool.Name, addr))
		case svc.local:
			part.addrs = append(part.addrs, addrOf{addr, addrPartOf(in, peers, svc, pool)})
		default:
			shared := p.shared[pool.Name]
			if shared == nil {
				shared = addrPartOf(in, peers, svc, pool)
				p.shared[pool.Name] = shared
			}
			part.addrs = append(part.addrs, addrOf{addr, shared})
		}
	}
	part.notAnnounced = strings.Join(notes, "; ")
	return part
}

// addrPartOf is what svc says about an address from pool.
func addrPartOf(in inputs, peers []*v1alpha1.BGPPeer, svc *lbService, pool *v1alpha1.IPPool) *addrPart {
	part := &addrPart{pool: pool}
	if pool.Spec.L2 != nil {
		part.missing = map[string]string{}
		part.l2Nodes, part.l2Why = eligibleNodes(in, svc, pool, part.missing)
	}
	if pool.Spec.BGP != nil {
		part.peersOf = map[string][]string{}
		part.bgpNodes, part.bgpWhy = bgpNodes(in, svc, pool, peers, part.peersOf)
		part.bgpList = slices.Sorted(maps.Keys(part.bgpNodes))
	}
	return part
}

// l2Announcement is addr's announcement from the parts of the Services that
// share it (keys, in name order): the first names the pool, the nodes all
// of them may use are eligible, and the first with none says why.
func l2Announcement(addr netip.Addr, keys []types.NamespacedName, parts []*addrPart, in inputs) *announcement {
	a := &announcement{addr: addr, pool: parts[0].pool.Name, poolObj: parts[0].pool, services: keys, recorded: in.recorded[addr]}
	eligible, missing := parts[0].l2Nodes, parts[0].missing
	if len(parts) > 1 {
		eligible, missing = maps.Clone(eligible), maps.Clone(missing)
		for _, part := range parts[1:] {
			maps.DeleteFunc(eligible, func(n string, _ bool) bool { return !part.l2Nodes[n] })
			maps.Copy(missing, part.missing)
		}
	}
	a.missing = missing
	a.owner = ownerOf(addr.String(), eligible, a.recorded)
	if a.owner != "" {
		a.interfaces = answeringInterfaces(a.poolObj, in.alive[a.owner])
		return a
	}
	a.reason = firstReason(parts, func(part *addrPart) (map[string]bool, string) { return part.l2Nodes, part.l2Why })
	return a
}

// bgpAdvertisement is addr's advertisement from the parts of the Services
// that share it, in name order, as l2Announcement.
func bgpAdvertisement(addr netip.Addr, keys []types.NamespacedName, parts []*addrPart) *advertisement {
	pool := parts[0].pool
	prefix, refused := aggregate(addr, pool)
	a := &advertisement{
		addr: addr, prefix: prefix, pool: pool.Name,
		communities: communityStrings(pool.Spec.BGP.Communities),
		localPref:   pool.Spec.BGP.LocalPref, services: keys,
	}
	if refused != "" {
		a.reason = refused
		return a
	}
	a.nodes, a.peers = parts[0].bgpList, parts[0].peersOf
	if len(parts) > 1 {
		eligible := maps.Clone(parts[0].bgpNodes)
		for _, part := range parts[1:] {
			maps.DeleteFunc(eligible, func(n string, _ bool) bool { return !part.bgpNodes[n] })
		}
		a.peers = map[string][]string{}
		for _, part := range parts {
			for n, peers := range part.peersOf {
				if eligible[n] {
					a.peers[n] = peers
				}
			}
		}
		a.nodes = slices.Sorted(maps.Keys(eligible))
	}
	if len(a.nodes) == 0 {
		a.reason = firstReason(parts, func(part *addrPart) (map[string]bool, string) { return part.bgpNodes, part.bgpWhy })
	}
	return a
}

// firstReason is why no node serves an address: the reason of the first
// Service that has no node at all, or that the Services sharing it have
// none in common.
func firstReason(parts []*addrPart, of func(*addrPart) (map[string]bool, string)) string {
	for _, part := range parts {
		if nodes, why := of(part); len(nodes) == 0 && why != "" {
			return why
		}
	}
	return "the Services sharing it have no eligible node in common"
}

// compareKeys orders Services by namespace, then name.
func compareKeys(x, y types.NamespacedName) int {
	return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
}

// current reports whether part was computed from svc and slices as they
// are, by their resource versions; never for an object without one.
func (part *servicePart) current(svc *lbService, slices []*discoveryv1.EndpointSlice) bool {
	if svc.ResourceVersion == "" || svc.ResourceVersion != part.version || len(slices) != len(part.sliceVersions) {
		return false
	}
	for i, es := range slices {
		if es.ResourceVersion == "" || es.ResourceVersion != part.sliceVersions[i] {
			return false
		}
	}
	return true
}

// worldKey is everything besides a Service and its endpoints that its part
// reads: of the nodes, their labels and whether their network is
// unavailable; the pools' and peers' specs (their generations; the peers'
// labels too, which pools select) and whether a pool is being deleted; the
// live speakers and their interfaces.
func worldKey(in inputs, peers []*v1alpha1.BGPPeer) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(in.nodes)) {
		n := in.nodes[name]
		fmt.Fprintf(&b, "node %s %t", name, networkUnavailable(n))
		writeMap(&b, n.Labels)
	}
	for _, p := range in.pools {
		fmt.Fprintf(&b, "pool %s %s %d %t\n", p.Name, p.UID, p.Generation, p.DeletionTimestamp != nil)
	}
	for _, p := range peers {
		fmt.Fprintf(&b, "peer %s %s %d", p.Name, p.UID, p.Generation)
		writeMap(&b, p.Labels)
	}
	for _, name := range slices.Sorted(maps.Keys(in.alive)) {
		b.WriteString("alive " + name)
		writeMap(&b, in.alive[name])
	}
	return b.String()
}

func writeMap(b *strings.Builder, m map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(" " + k + "=" + m[k])
	}
	b.WriteString("\n")
}

// l2Plan and bgpPlan are the plans computed from nothing.
func l2Plan(in inputs) (map[netip.Addr]*announcement, map[types.NamespacedName]string) {
	l2, notAnnounced, _ := newPlanner().plan(in, nil)
	return l2, notAnnounced
}

func bgpPlan(in inputs, peers []*v1alpha1.BGPPeer) map[netip.Addr]*advertisement {
	_, _, bgp := newPlanner().plan(in, peers)
	return bgp
}
