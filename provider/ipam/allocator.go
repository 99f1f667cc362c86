package ipam

import (
	"net/netip"
	"slices"
	"sync"
)

// Allocator remembers which Service holds which address and hands out new ones. Its state lives
// only in memory: a new leader rebuilds it from the Services' status (Restore, oldest Service
// first) and so knows every address in use before it hands out any.
type Allocator struct {
	mu sync.Mutex

	pools       map[string]*poolState
	ordered     []*poolState // usable pools in the order new allocations try them
	conflicting []*poolState // pools in Conflict: counted, never allocated from
	deleting    []*poolState // pools being deleted, by name: counted, never allocated from
	index       []rangeRef   // ranges of usable pools, sorted
	hasInternal bool

	used    usedSet
	holders map[netip.Addr]holderList
	svcs    map[string]*svcState
	groups  map[groupKey]map[netip.Addr]int // addresses held per sharing group, with member counts

	eligibleBuf []*poolState
	groupBuf    []netip.Addr
}

// svcState is what the allocator recorded for a Service at its last successful Allocate or
// Restore; keeping it unchanged after a failed request is what keeps a bad request from moving
// or corrupting anything.
type svcState struct {
	holder
	addrs    []netip.Addr // in the order of the Service's families; backed by addrBuf
	addrBuf  [2]netip.Addr
	internal bool
	pools    []string // Request.Pools at the time
	// pool is the pool whose settings announced its addresses at the last Allocate or Restore
	// (Result.Pool): the one they stay with once they leave every usable pool.
	pool string
}

// New returns an allocator with no pools.
func New() *Allocator {
	return &Allocator{
		pools:   map[string]*poolState{},
		used:    newUsedSet(),
		holders: map[netip.Addr]holderList{},
		svcs:    map[string]*svcState{},
		groups:  map[groupKey]map[netip.Addr]int{},
	}
}

// Restore records addresses a Service already holds (read from its status at start-up), before any
// Allocate. It does not require the addresses to be in a pool. It fails with ReasonInUse if an
// address is already held by a Service it may not share with (the caller restores Services oldest
// first, so the older one keeps it).
func (a *Allocator) Restore(req Request, addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if req.Service == "" {
		return errorf(ReasonInvalidRequest, "a Service without a name cannot hold addresses")
	}
	if len(addrs) == 0 {
		return nil
	}
	var byFam [2]netip.Addr
	for _, addr := range addrs {
		addr = addr.Unmap().WithZone("")
		if !addr.IsValid() {
			return errorf(ReasonInvalidRequest, "the Service's status holds an invalid address")
		}
		fi := famIdx(FamilyOf(addr))
		if byFam[fi].IsValid() && byFam[fi] != addr {
			return errorf(ReasonInvalidRequest, "the Service's status holds two %s addresses, %s and %s; a Service holds at most one per family",
				families[fi], byFam[fi], addr)
		}
		byFam[fi] = addr
	}
	self := a.svcs[req.Service]
	me := holderOf(&req)
	for _, addr := range byFam {
		if !addr.IsValid() {
			continue
		}
		if o := a.conflictOn(&me, self, addr); o != nil {
			return errorf(ReasonInUse, "address %s is already held by %s, which may not share it with this Service", addr, o.name)
		}
	}
	ordered := make([]netip.Addr, 0, 2)
	for _, f := range req.Families {
		if addr := byFam[famIdx(f)]; addr.IsValid() && !slices.Contains(ordered, addr) {
			ordered = append(ordered, addr)
		}
	}
	for _, addr := range byFam {
		if addr.IsValid() && !slices.Contains(ordered, addr) {
			ordered = append(ordered, addr)
		}
	}
	self = a.replace(self, &req, ordered)
	self.pool = req.From
	self.pool = a.poolOf(self)
	// The request is taken as the one the addresses were given for, so that pools edited while
	// no leader ran move nothing (see keep). An address still in the pool it was recorded from,
	// which the Service no longer names, says otherwise: the request changed meanwhile, and the
	// Service moves as it would have.
	if p := a.pools[self.pool]; p != nil && self.pool == req.From && len(req.Pools) > 0 && !slices.Contains(req.Pools, p.Name) &&
		slices.ContainsFunc(ordered, func(addr netip.Addr) bool { return a.usablePool(addr) == p }) {
		self.pools = []string{p.Name}
	}
	return nil
}

// Allocate returns the addresses the Service should hold and records them. When the request
// cannot be met, a Service that already holds addresses keeps them: the Result then carries those
// addresses along with the error, so the caller keeps serving them and still reports why.
func (a *Allocator) Allocate(req Request) (Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	self := a.svcs[req.Service]
	pl := plan{req: req, self: self, me: holderOf(&req)}
	err := validate(&pl)
	if err == nil {
		pl.loadPrefer()
	}
	if err == nil && self != nil {
		if res, ok := a.keep(&pl); ok {
			return res, nil
		}
	}
	var buf [2]netip.Addr
	var addrs []netip.Addr
	var from *poolState
	if err == nil {
		addrs, from, err = a.place(&pl, &buf)
	}
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Unkept = a.unkept(&pl, nil)
		}
		if self != nil {
			return a.result(self), err
		}
		return Result{}, err
	}
	unkept := a.unkept(&pl, addrs)
	self = a.replace(self, &req, addrs)
	self.pool = from.Name
	return Result{Addrs: slices.Clone(addrs), Pool: from.Name, Unkept: unkept}, nil
}

// Release frees everything the Service holds and returns the addresses no Service holds any more.
func (a *Allocator) Release(service string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	self := a.svcs[service]
	if self == nil {
		return nil
	}
	a.leaveGroup(self)
	var freed []netip.Addr
	for _, addr := range self.addrs {
		if a.drop(self, addr) {
			freed = append(freed, addr)
		}
	}
	delete(a.svcs, service)
	return freed
}

// Holding returns what the Service holds now (nil if nothing).
func (a *Allocator) Holding(service string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if self := a.svcs[service]; self != nil {
		return slices.Clone(self.addrs)
	}
	return nil
}

// replace makes addrs the Service's holding and records the request they were given for.
// Addresses it held before and still holds are untouched, so a shared address never goes through
// a moment without holders. It returns the Service's record, new if self was nil.
func (a *Allocator) replace(self *svcState, req *Request, addrs []netip.Addr) *svcState {
	if self == nil {
		self = &svcState{}
		a.svcs[req.Service] = self
	} else {
		a.leaveGroup(self)
	}
	for _, addr := range self.addrs {
		if !slices.Contains(addrs, addr) {
			a.drop(self, addr)
		}
	}
	for _, addr := range addrs {
		if !slices.Contains(self.addrs, addr) {
			a.hold(self, addr)
		}
	}
	self.holder = holderOf(req)
	self.ports = normalizedPorts(req.Ports)
	self.addrs = append(self.addrBuf[:0], addrs...)
	self.internal = req.Internal
	if !slices.Equal(self.pools, req.Pools) {
		self.pools = slices.Clone(req.Pools)
	}
	a.joinGroup(self)
	return self
}

func (a *Allocator) hold(self *svcState, addr netip.Addr) {
	hs := a.holders[addr]
	if hs.len() == 0 {
		a.used.add(addr)
		a.countHeld(addr, true)
	}
	a.holders[addr] = hs.with(self)
}

// drop removes self from addr's holders and reports whether addr is free now.
func (a *Allocator) drop(self *svcState, addr netip.Addr) bool {
	hs, ok := a.holders[addr].without(self)
	if !ok {
		return false
	}
	if hs.len() > 0 {
		a.holders[addr] = hs
		return false
	}
	delete(a.holders, addr)
	a.used.remove(addr)
	a.countHeld(addr, false)
	return true
}

// result describes what the Service holds now and the pool whose settings announce it, with a
// warning for each address that left every usable pool.
func (a *Allocator) result(self *svcState) Result {
	self.pool = a.poolOf(self)
	res := Result{Addrs: slices.Clone(self.addrs), Pool: self.pool}
	for _, addr := range self.addrs {
		if a.usablePool(addr) == nil {
			res.Warnings = append(res.Warnings, a.orphanWarning(addr))
		}
	}
	return res
}

const keepsIt = "the Service keeps it until it is deleted or asks for another address"

func (a *Allocator) orphanWarning(addr netip.Addr) string {
	if p := a.conflictingPool(addr); p != nil {
		return "address " + addr.String() + " is only in pool " + p.Name + ", which is in conflict with " +
			joinNames(p.conflicts) + "; " + keepsIt
	}
	if p := a.deletingPool(addr); p != nil {
		return "address " + addr.String() + " is only in pool " + p.Name + ", which is being deleted; " + keepsIt +
			", and the pool stays until then"
	}
	return "address " + addr.String() + " is no longer in any pool; " + keepsIt
}

func sortAddrs(addrs []netip.Addr) {
	slices.SortFunc(addrs, netip.Addr.Compare)
}

// holderList is who holds one address. Nearly every address has a single holder, kept inline so
// that holding an address costs no allocation.
type holderList struct {
	first *svcState
	rest  []*svcState
}

func (h holderList) len() int {
	if h.first == nil {
		return 0
	}
	return 1 + len(h.rest)
}

func (h holderList) at(i int) *svcState {
	if i == 0 {
		return h.first
	}
	return h.rest[i-1]
}

func (h holderList) with(s *svcState) holderList {
	if h.first == nil {
		h.first = s
	} else {
		h.rest = append(h.rest, s)
	}
	return h
}

func (h holderList) without(s *svcState) (holderList, bool) {
	if h.first == s {
		if len(h.rest) == 0 {
			return holderList{}, true
		}
		return holderList{first: h.rest[0], rest: h.rest[1:]}, true
	}
	i := slices.Index(h.rest, s)
	if i < 0 {
		return h, false
	}
	h.rest = slices.Delete(slices.Clone(h.rest), i, i+1)
	return h, true
}
