package ipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
	"k8s.io/apimachinery/pkg/labels"
)

// pool is a Pool with what the allocator derives from it when the pool set changes.
type poolState struct {
	Pool
	set       *netipx.IPSet
	ranges    []*prange
	conflicts []string     // older pools it overlaps, oldest first
	capacity  [2]*big.Int  // per family index; nil when the pool has no range of that family
	allocated [2]u128      // held addresses that count towards capacity
	famRanges [2][]*prange // ranges per family index, in address order
}

// prange is one range of a pool in the space the free search runs in: IPv4 ranges of pools that
// avoid buggy addresses are searched in the dense numbering of non-buggy addresses.
type prange struct {
	r      netipx.IPRange
	fam    Family
	dense  bool
	empty  bool // only buggy addresses, nothing to hand out
	lo, hi u128
	// cursor is where the next search starts. It moves past every address handed out and wraps,
	// so a freed address is reused only after the rest of the range had its turn: routers and
	// clients that still cache the old owner's MAC get time to forget it.
	cursor u128
}

type cursorKey struct {
	r     netipx.IPRange
	dense bool
}

// rangeRef locates a usable pool by address. Usable pools never overlap, so the ranges of all of
// them form one sorted, disjoint list that a binary search answers.
type rangeRef struct {
	r netipx.IPRange
	p *poolState
}

func famIdx(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

var families = [2]Family{IPv4, IPv6}

func (p *poolState) contains(a netip.Addr) bool { return p.set.Contains(a) }

// counts reports whether a held address counts towards the pool's allocated addresses: buggy
// addresses are not part of the capacity of a pool that avoids them, so they are not counted
// either, and available stays exactly what can still be handed out.
func (p *poolState) counts(a netip.Addr) bool {
	return p.contains(a) && !(p.AvoidBuggyIPs && isBuggy(a))
}

// serves reports whether the pool may give new addresses to the Service behind pl, apart from
// autoAssign and Request.Pools, which depend on how the Service asks.
func (p *poolState) serves(pl *plan) bool {
	return len(p.conflicts) == 0 && p.visibility() == pl.visibility() && p.matches(&pl.req)
}

func (p *poolState) visibility() Visibility {
	if p.Visibility == Internal {
		return Internal
	}
	return External
}

func (p *poolState) matches(req *Request) bool {
	if !p.Reserved {
		return true
	}
	return selects(p.NamespaceSelector, req.NamespaceLabels) && selects(p.ServiceSelector, req.ServiceLabels)
}

func selects(sel labels.Selector, m map[string]string) bool {
	return sel == nil || sel.Matches(labels.Set(m))
}

func normalizeRanges(in []netipx.IPRange) *netipx.IPSet {
	var b netipx.IPSetBuilder
	for _, r := range in {
		from, to := r.From().Unmap().WithZone(""), r.To().Unmap().WithZone("")
		r = netipx.IPRangeFrom(from, to)
		if r.IsValid() {
			b.AddRange(r)
		}
	}
	set, _ := b.IPSet() // invalid ranges were skipped above, so there is nothing to report
	return set
}

func newPool(in Pool, cursors map[cursorKey]u128) *poolState {
	p := &poolState{Pool: in, set: normalizeRanges(in.Ranges)}
	p.Ranges = p.set.Ranges()
	for _, r := range p.Ranges {
		pr := &prange{r: r, fam: FamilyOf(r.From())}
		lo, hi := u128Of(r.From()), u128Of(r.To())
		fi := famIdx(pr.fam)
		if pr.fam == IPv4 && p.AvoidBuggyIPs {
			pr.dense = true
			var ok bool
			lo, hi, ok = denseRange(lo.lo, hi.lo)
			pr.empty = !ok
		}
		pr.lo, pr.hi = lo, hi
		if p.capacity[fi] == nil {
			p.capacity[fi] = new(big.Int)
		}
		if !pr.empty {
			p.capacity[fi].Add(p.capacity[fi], hi.sub(lo).big())
			p.capacity[fi].Add(p.capacity[fi], big.NewInt(1))
		}
		pr.cursor = lo
		if c, ok := cursors[cursorKey{r, pr.dense}]; ok && !c.less(lo) && !hi.less(c) {
			pr.cursor = c
		}
		p.ranges = append(p.ranges, pr)
		p.famRanges[fi] = append(p.famRanges[fi], pr)
	}
	return p
}

// overlaps walks two sorted, disjoint range lists together.
func overlaps(a, b []netipx.IPRange) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i].Overlaps(b[j]) {
			return true
		}
		if a[i].To().Less(b[j].To()) {
			i++
		} else {
			j++
		}
	}
	return false
}

// SetPools replaces the pool set. It never changes what any Service holds. Pools that overlap an
// older pool (Pool.CreatedUnix, then name) are in Conflict and are not used for new allocations,
// nor are pools being deleted.
//
// It returns the Services the change moved, sorted: those whose Result.Pool or Result.Warnings
// the next Allocate may report differently, because the pool that announces their addresses,
// the usable pool of one of their addresses, or a pool they name changed.
func (a *Allocator) SetPools(pools []Pool) (moved []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	before := make(map[*svcState]string, len(a.svcs))
	for _, s := range a.svcs {
		before[s] = a.standing(s)
	}
	a.setPools(pools)
	for name, s := range a.svcs {
		if a.standing(s) != before[s] {
			moved = append(moved, name)
		}
	}
	slices.Sort(moved)
	return moved
}

func (a *Allocator) setPools(pools []Pool) {
	// Cursors survive for ranges that did not change, so editing one pool does not send every
	// other pool back to its first address.
	cursors := make(map[cursorKey]u128)
	for _, p := range a.pools {
		for _, r := range p.ranges {
			cursors[cursorKey{r.r, r.dense}] = r.cursor
		}
	}

	byName := make(map[string]*poolState, len(pools))
	for _, in := range pools {
		byName[in.Name] = newPool(in, cursors)
	}
	// Pools being deleted take no part: they hand out nothing, and a pool that takes over their
	// ranges must not wait for them to go.
	byAge := make([]*poolState, 0, len(byName))
	a.deleting = a.deleting[:0]
	for _, p := range byName {
		if p.Deleting {
			a.deleting = append(a.deleting, p)
			continue
		}
		byAge = append(byAge, p)
	}
	slices.SortFunc(a.deleting, func(x, y *poolState) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(byAge, func(x, y *poolState) int {
		return cmp.Or(cmp.Compare(x.CreatedUnix, y.CreatedUnix), cmp.Compare(x.Name, y.Name))
	})
	for i, p := range byAge {
		for _, older := range byAge[:i] {
			if overlaps(p.Ranges, older.Ranges) {
				p.conflicts = append(p.conflicts, older.Name)
			}
		}
	}

	a.pools = byName
	a.ordered = a.ordered[:0]
	a.conflicting = a.conflicting[:0]
	a.index = a.index[:0]
	a.hasInternal = false
	for _, p := range byAge {
		if p.visibility() == Internal {
			a.hasInternal = true
		}
		if len(p.conflicts) > 0 {
			a.conflicting = append(a.conflicting, p)
			continue
		}
		a.ordered = append(a.ordered, p)
		for _, r := range p.Ranges {
			a.index = append(a.index, rangeRef{r, p})
		}
	}
	slices.SortFunc(a.ordered, comparePreference)
	slices.SortFunc(a.index, func(x, y rangeRef) int { return x.r.From().Compare(y.r.From()) })

	for _, p := range byName {
		a.recount(p)
	}
}

// standing describes what of the pool set a Service's Result.Pool and Result.Warnings depend on:
// the pool that announces its addresses, the usable pool of each address (or why it has none),
// and the pools it names. A pool is told by its name, visibility, creation time and whether it
// is being deleted, so that a pool replaced under the same name counts as changed.
func (a *Allocator) standing(s *svcState) string {
	var b strings.Builder
	describe := func(p *poolState) {
		if p == nil {
			b.WriteString(" -")
			return
		}
		fmt.Fprintf(&b, " %s/%s/%d/%t", p.Name, p.visibility(), p.CreatedUnix, p.Deleting)
	}
	pool := a.poolOf(s)
	b.WriteString(pool)
	describe(a.pools[pool])
	for _, addr := range s.addrs {
		if p := a.usablePool(addr); p != nil {
			describe(p)
		} else {
			b.WriteString(" " + a.orphanWarning(addr))
		}
	}
	for _, name := range s.pools {
		describe(a.pools[name])
	}
	return b.String()
}

// comparePreference orders usable pools as new allocations try them: reserved pools by priority,
// then the rest by name.
func comparePreference(x, y *poolState) int {
	if x.Reserved != y.Reserved {
		if x.Reserved {
			return -1
		}
		return 1
	}
	if x.Reserved {
		if c := cmp.Compare(x.Priority, y.Priority); c != 0 {
			return c
		}
	}
	return cmp.Compare(x.Name, y.Name)
}

// recount computes a pool's allocated counts from the used spans inside its ranges, so counts are
// right for a pool that just appeared or changed, at the cost of the spans, not the addresses.
func (a *Allocator) recount(p *poolState) {
	p.allocated = [2]u128{}
	for _, r := range p.ranges {
		if r.empty {
			continue
		}
		fi := famIdx(r.fam)
		p.allocated[fi] = addU128(p.allocated[fi], a.used.set(r).count(r.lo, r.hi))
	}
}

// usablePool returns the usable pool that contains addr.
func (a *Allocator) usablePool(addr netip.Addr) *poolState {
	i, found := slices.BinarySearchFunc(a.index, addr, func(ref rangeRef, x netip.Addr) int {
		return ref.r.From().Compare(x)
	})
	if !found {
		i--
	}
	if i < 0 || !a.index[i].r.Contains(addr) {
		return nil
	}
	return a.index[i].p
}

// countHeld adjusts the allocated counts of every pool holding addr, in conflict or not.
func (a *Allocator) countHeld(addr netip.Addr, held bool) {
	adjust := func(p *poolState) {
		if !p.counts(addr) {
			return
		}
		fi := famIdx(FamilyOf(addr))
		if held {
			p.allocated[fi] = addU128(p.allocated[fi], u128{0, 1})
		} else {
			p.allocated[fi] = p.allocated[fi].sub(u128{0, 1})
		}
	}
	if p := a.usablePool(addr); p != nil {
		adjust(p)
	}
	for _, p := range a.conflicting {
		adjust(p)
	}
	for _, p := range a.deleting {
		adjust(p)
	}
}

// deletingPool returns the first pool being deleted, by name, that contains addr.
func (a *Allocator) deletingPool(addr netip.Addr) *poolState {
	for _, p := range a.deleting {
		if p.contains(addr) {
			return p
		}
	}
	return nil
}

// poolOf is the pool whose settings announce what the Service holds: the usable pool of the first
// of its addresses that is in one; else the pool they were last in, which may have shrunk, be in
// conflict or being deleted; else a pool being deleted that holds one of them (a Service restored
// without a record of its pool). It is the name of a pool that no longer exists when nothing
// better is known.
func (a *Allocator) poolOf(s *svcState) string {
	for _, addr := range s.addrs {
		if p := a.usablePool(addr); p != nil {
			return p.Name
		}
	}
	if a.pools[s.pool] == nil {
		for _, addr := range s.addrs {
			if p := a.deletingPool(addr); p != nil {
				return p.Name
			}
		}
	}
	return s.pool
}

// PoolUsers are the Services whose addresses a pool's settings announce.
type PoolUsers struct {
	Count int
	// Services are their names, sorted, for a pool being deleted only: its status says who keeps
	// it. Other pools are only counted.
	Services []string
}

// PoolUsers reports, by pool name, the Services whose addresses its settings announce (see
// Result.Pool): those holding addresses in it, and those whose addresses left every usable pool
// after they were last in it. Such a pool must not go away, or its Services would not be
// announced any more; one without users may.
func (a *Allocator) PoolUsers() map[string]PoolUsers {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]PoolUsers{}
	for name, s := range a.svcs {
		pool := a.poolOf(s)
		if len(s.addrs) == 0 || pool == "" {
			continue
		}
		// A pool the allocator was not given (one it could not read) is counted too: its
		// Services still need it.
		u := out[pool]
		u.Count++
		if p := a.pools[pool]; p != nil && p.Deleting {
			u.Services = append(u.Services, name)
		}
		out[pool] = u
	}
	for _, u := range out {
		slices.Sort(u.Services)
	}
	return out
}

// PoolStatus is what the provider writes into an IPPool's status.
type PoolStatus struct {
	// Per family, decimal strings (IPv6 pools hold up to 2^64 and more): only families the pool has.
	Capacity, Allocated, Available map[Family]string
	ConflictsWith                  []string // names of pools it overlaps that win over it (empty when usable)
}

// PoolStatus reports a pool's counts and conflicts; ok is false for an unknown pool.
func (a *Allocator) PoolStatus(name string) (st PoolStatus, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pools[name]
	if p == nil {
		return PoolStatus{}, false
	}
	st = PoolStatus{
		Capacity:      map[Family]string{},
		Allocated:     map[Family]string{},
		Available:     map[Family]string{},
		ConflictsWith: slices.Clone(p.conflicts),
	}
	for fi, capacity := range p.capacity {
		if capacity == nil {
			continue
		}
		f := families[fi]
		alloc := p.allocated[fi].big()
		avail := new(big.Int).Sub(capacity, alloc)
		st.Capacity[f] = capacity.String()
		st.Allocated[f] = alloc.String()
		st.Available[f] = avail.String()
	}
	return st, true
}

// PoolOf returns the usable (non-conflicting) pool containing addr, if any.
func (a *Allocator) PoolOf(addr netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.usablePool(addr.Unmap().WithZone("")); p != nil {
		return p.Name, true
	}
	return "", false
}
