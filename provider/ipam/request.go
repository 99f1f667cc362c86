package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// plan is a validated request and what the allocator learned about it on the way to a decision.
type plan struct {
	req       Request
	self      *svcState // what the Service holds now, nil if nothing
	me        holder
	policy    Policy
	famArr    [2]Family // the families the Service uses, in its order: famArr[:nfam]
	nfam      int
	requested [2]netip.Addr // per family index
	eligible  []*poolState  // pools new addresses may come from, best first
	// group holds, per family, the addresses other members of the Service's sharing group hold
	// that it may join; when there are any, the Service must take one of them.
	group [2][]netip.Addr
	// prefer holds, per family index, the preferred address still in play; unkept the preferred
	// addresses already ruled out.
	prefer [2]netip.Addr
	unkept []Unkept
}

func (pl *plan) fams() []Family { return pl.famArr[:pl.nfam] }

func (pl *plan) wants(f Family) bool { return slices.Contains(pl.fams(), f) }

// behind reports whether others wait longer for a fresh address of family f from pool p.
func (pl *plan) behind(p string, f Family) bool {
	return slices.Contains(pl.req.Behind, Line{Pool: p, Family: f})
}

// holdsNothing reports whether the Service holds no address: only then do its preferred
// addresses count, since a Service that holds addresses keeps them.
func (pl *plan) holdsNothing() bool { return pl.self == nil || len(pl.self.addrs) == 0 }

// loadPrefer takes the preferred addresses the Service can use at all and rules out the others.
// An address of a family that is also requested explicitly is dropped without a word: the
// request says the Service wants another address now.
func (pl *plan) loadPrefer() {
	if !pl.holdsNothing() {
		return
	}
	for _, addr := range pl.req.Prefer {
		addr = addr.Unmap().WithZone("")
		if !addr.IsValid() {
			continue
		}
		f := FamilyOf(addr)
		fi := famIdx(f)
		switch {
		case !pl.wants(f):
			pl.unkept = append(pl.unkept, Unkept{Addr: addr, Reason: ReasonWrongFamily})
		case pl.requested[fi].IsValid() || pl.prefer[fi].IsValid():
		default:
			pl.prefer[fi] = addr
		}
	}
}

// unkept lists the preferred addresses the Service did not get (got is what it gets), and why.
func (a *Allocator) unkept(pl *plan, got []netip.Addr) []Unkept {
	out := slices.Clone(pl.unkept)
	for _, addr := range pl.prefer {
		if !addr.IsValid() || slices.Contains(got, addr) {
			continue
		}
		u := Unkept{Addr: addr, Reason: ReasonNotInPool}
		if o := a.conflictOn(&pl.me, pl.self, addr); o != nil {
			u.Reason, u.Holder = ReasonInUse, o.name
		}
		out = append(out, u)
	}
	return out
}

func (pl *plan) visibility() Visibility {
	if pl.req.Internal {
		return Internal
	}
	return External
}

// requestedIn reports whether p holds one of the requested addresses.
func (pl *plan) requestedIn(p *poolState) bool {
	for _, r := range pl.requested {
		if r.IsValid() && p.contains(r) {
			return true
		}
	}
	return false
}

// validate checks what can be checked from the request alone.
func validate(pl *plan) error {
	req := &pl.req
	if req.Service == "" {
		return errorf(ReasonInvalidRequest, "a Service without a name cannot hold addresses")
	}
	pl.policy = req.Policy
	if pl.policy == "" {
		pl.policy = SingleStack
	}
	switch pl.policy {
	case SingleStack, PreferDualStack, RequireDualStack:
	default:
		return errorf(ReasonInvalidRequest, "unknown IP family policy %q", req.Policy)
	}
	for _, f := range req.Families {
		if f != IPv4 && f != IPv6 {
			return errorf(ReasonInvalidRequest, "unknown IP family %q", f)
		}
		if !pl.wants(f) {
			pl.famArr[pl.nfam] = f
			pl.nfam++
		}
	}
	switch {
	case pl.nfam == 0:
		return errorf(ReasonInvalidRequest, "the Service lists no IP family")
	case pl.policy == SingleStack:
		pl.nfam = 1
	case pl.policy == RequireDualStack && pl.nfam < 2:
		return errorf(ReasonDualStack, "the Service requires dual-stack but lists only %s in its IP families", pl.famArr[0])
	}

	for _, r := range req.IPs {
		r = r.Unmap().WithZone("")
		if !r.IsValid() {
			return errorf(ReasonInvalidRequest, "a requested address is not a valid IP address")
		}
		fi := famIdx(FamilyOf(r))
		if prev := pl.requested[fi]; prev.IsValid() && prev != r {
			return errorf(ReasonInvalidRequest, "at most one address per family may be requested, but %s and %s are both %s",
				prev, r, families[fi])
		}
		pl.requested[fi] = r
	}
	for fi, r := range pl.requested {
		if r.IsValid() && !pl.wants(families[fi]) {
			return errorf(ReasonWrongFamily, "requested address %s is %s, but the Service uses only %s",
				r, families[fi], joinFamilies(pl.fams()))
		}
	}
	return nil
}

// keep reports whether the Service keeps what it holds, and records the request if so. What it
// holds is kept while it fits the request, and also, as long as the Service asks for what it
// asked for when it got it, when a pool edit made it no longer fit: a pool that shrank, was
// deleted, changed its visibility, or lost the range to a pool the Service does not name, never
// moves a Service. Only a changed request does.
func (a *Allocator) keep(pl *plan) (Result, bool) {
	self, req := pl.self, &pl.req
	if len(self.addrs) == 0 {
		return Result{}, false
	}
	var have [2]bool
	for _, addr := range self.addrs {
		f := FamilyOf(addr)
		if !pl.wants(f) {
			return Result{}, false
		}
		have[famIdx(f)] = true
	}
	if pl.policy == RequireDualStack && !(have[0] && have[1]) {
		return Result{}, false
	}
	for _, r := range pl.requested {
		if r.IsValid() && !slices.Contains(self.addrs, r) {
			return Result{}, false
		}
	}
	same := self.internal == req.Internal && sameNames(self.pools, req.Pools)
	// A named pool that does not exist is a mistake in the request, unless the Service named it
	// all along and the pool was deleted since, which must not move the Service.
	var notes []string
	for _, name := range req.Pools {
		p := a.pools[name]
		if p != nil && !p.Deleting {
			continue
		}
		if !same {
			return Result{}, false
		}
		if p == nil {
			notes = append(notes, fmt.Sprintf("pool %q named by the Service does not exist", name))
		} else {
			notes = append(notes, fmt.Sprintf("pool %q named by the Service is being deleted", name))
		}
	}
	var from *poolState // the usable pool of its first address in one, fitting or not
	var misfits []string
	for _, addr := range self.addrs {
		if a.conflictOn(&pl.me, self, addr) != nil {
			return Result{}, false
		}
		p := a.usablePool(addr)
		if p == nil {
			// Without a pool there is nothing to check the address against; what the Service
			// asked for when it got it still holds as long as it asks for the same.
			if !same {
				return Result{}, false
			}
			continue
		}
		if why := misfit(p, pl); why != "" {
			if !same {
				return Result{}, false
			}
			misfits = append(misfits, fmt.Sprintf("address %s is in pool %s, %s; %s", addr, p.Name, why, keepsIt))
		}
		if from == nil {
			from = p
		}
	}

	var buf [2]netip.Addr
	addrs := append(buf[:0], self.addrs...)
	if pl.policy == PreferDualStack && len(addrs) < pl.nfam && from != nil && misfit(from, pl) == "" {
		// The pool may have gained the other family since; adding it moves nothing.
		if a.loadGroup(pl) == nil {
			for _, f := range pl.fams() {
				if have[famIdx(f)] {
					continue
				}
				if c, ok := a.pick(from, f, pl); ok == pickOK {
					c.take()
					addrs = append(addrs, c.addr)
				}
			}
		}
	}
	// The Service may list its families in another order than when it got the addresses.
	a.replace(self, req, inFamilyOrder(pl.fams(), addrs))
	res := a.result(self)
	res.Warnings = append(res.Warnings, misfits...)
	res.Warnings = append(res.Warnings, notes...)
	return res, true
}

// misfit says why the Service would not get an address of the usable pool p now, as far as its
// visibility and the pools it names go; "" when it would.
func misfit(p *poolState, pl *plan) string {
	switch {
	case p.visibility() != pl.visibility():
		return fmt.Sprintf("which serves only %s Services", strings.ToLower(string(p.visibility())))
	case len(pl.req.Pools) > 0 && !slices.Contains(pl.req.Pools, p.Name):
		return fmt.Sprintf("which the Service does not name (it names %s)", strings.Join(pl.req.Pools, ", "))
	}
	return ""
}

func inFamilyOrder(fams []Family, addrs []netip.Addr) []netip.Addr {
	slices.SortStableFunc(addrs, func(x, y netip.Addr) int {
		return slices.Index(fams, FamilyOf(x)) - slices.Index(fams, FamilyOf(y))
	})
	return addrs
}

// place decides new addresses for the Service. The Service's own addresses count as free for
// it, so a changed request keeps whatever part of the old holding still fits.
func (a *Allocator) place(pl *plan, out *[2]netip.Addr) ([]netip.Addr, *poolState, error) {
	if err := a.eligible(pl); err != nil {
		return nil, nil, err
	}
	if err := a.checkRequested(pl); err != nil {
		return nil, nil, err
	}
	if len(pl.eligible) == 0 {
		return nil, nil, a.noPoolError(pl)
	}
	if err := a.loadGroup(pl); err != nil {
		return nil, nil, err
	}
	if pl.holdsNothing() {
		// Trying the pool of a preferred address first gives it back when it is free.
		for _, addr := range pl.prefer {
			if p := a.usablePool(addr); addr.IsValid() && p != nil {
				if i := slices.Index(pl.eligible, p); i > 0 {
					copy(pl.eligible[1:i+1], pl.eligible[:i])
					pl.eligible[0] = p
				}
				break
			}
		}
	} else {
		// Trying the current pool first keeps the Service where it is when it can stay.
		for _, addr := range pl.self.addrs {
			if p := a.usablePool(addr); p != nil {
				if i := slices.Index(pl.eligible, p); i > 0 {
					copy(pl.eligible[1:i+1], pl.eligible[:i])
					pl.eligible[0] = p
				}
				break
			}
		}
	}

	var fails failures
	var buf [2]choice
	choices, from := a.firstPool(pl, pl.fams(), &fails, &buf)
	if from == nil && pl.policy == PreferDualStack && pl.nfam == 2 {
		// A family the Service must have (requested, or held by its sharing group) decides;
		// otherwise the first family some pool can give.
		var mustArr [2]Family
		must := mustArr[:0]
		for _, f := range pl.fams() {
			fi := famIdx(f)
			if pl.requested[fi].IsValid() || len(pl.group[fi]) > 0 {
				must = append(must, f)
			}
		}
		if len(must) > 0 {
			choices, from = a.firstPool(pl, must, &fails, &buf)
		} else {
			for _, f := range pl.fams() {
				if choices, from = a.firstPool(pl, []Family{f}, &fails, &buf); from != nil {
					break
				}
			}
		}
	}
	if from == nil {
		return nil, nil, fails.err(pl)
	}
	addrs := out[:0]
	for _, c := range choices {
		c.take()
		addrs = append(addrs, c.addr)
	}
	return addrs, from, nil
}

// eligible finds the pools the Service may get new addresses from, best first.
func (a *Allocator) eligible(pl *plan) error {
	req := &pl.req
	if req.Internal && !a.hasInternal {
		return errorf(ReasonNoInternalPool, "the Service asks for an internal address, but no pool has visibility Internal")
	}
	out := a.eligibleBuf[:0]
	if len(req.Pools) > 0 {
		var unknown []string
		for _, name := range req.Pools {
			if a.pools[name] == nil && !slices.Contains(unknown, name) {
				unknown = append(unknown, name)
			}
		}
		switch len(unknown) {
		case 0:
		case 1:
			return errorf(ReasonUnknownPool, "pool %q named by the Service does not exist", unknown[0])
		default:
			return errorf(ReasonUnknownPool, "pools %s named by the Service do not exist", quoteNames(unknown))
		}
		for _, p := range a.ordered {
			if slices.Contains(req.Pools, p.Name) && p.serves(pl) {
				out = append(out, p)
			}
		}
	} else {
		for _, p := range a.ordered {
			// A requested address may come from a pool that does not auto-assign: asking for
			// the address is as explicit as naming the pool.
			if p.serves(pl) && (p.AutoAssign || pl.requestedIn(p)) {
				out = append(out, p)
			}
		}
	}
	a.eligibleBuf = out
	pl.eligible = out
	return nil
}

// checkRequested checks the requested addresses and narrows the eligible pools to theirs.
func (a *Allocator) checkRequested(pl *plan) error {
	var from *poolState
	var first netip.Addr
	for _, r := range pl.requested {
		if !r.IsValid() {
			continue
		}
		p := a.usablePool(r)
		if p == nil || !slices.Contains(pl.eligible, p) {
			msg := fmt.Sprintf("requested address %s is not in any pool this Service may use (pools: %s)", r, poolNames(pl.eligible))
			if p == nil {
				p = a.conflictingPool(r)
			}
			if p == nil {
				p = a.deletingPool(r)
			}
			if p != nil {
				msg += "; " + a.whyNot(p, pl)
			}
			return &Error{Reason: ReasonNotInPool, Message: msg}
		}
		if from != nil && from != p {
			return errorf(ReasonInvalidRequest, "requested addresses %s and %s are in different pools (%s and %s), but all of a Service's addresses come from one pool",
				first, r, from.Name, p.Name)
		}
		from, first = p, r
		if p.AvoidBuggyIPs && isBuggy(r) {
			return errorf(ReasonInvalidRequest, "requested address %s ends in .0 or .255, which pool %s avoids (avoidBuggyIPs) because some clients cannot reach such addresses",
				r, p.Name)
		}
		if o := a.conflictOn(&pl.me, pl.self, r); o != nil {
			return pl.me.shareError("requested address "+r.String(), &o.holder)
		}
	}
	if from != nil {
		pl.eligible = append(pl.eligible[:0], from)
	}
	return nil
}

// loadGroup finds the addresses of the Service's sharing group it may join.
func (a *Allocator) loadGroup(pl *plan) error {
	pl.group = [2][]netip.Addr{}
	addrs := a.groupAddrs(&pl.me, pl.self, a.groupBuf[:0])
	a.groupBuf = addrs
	var clashAddr [2]netip.Addr
	var clashWith [2]*svcState
	for _, addr := range addrs {
		fi := famIdx(FamilyOf(addr))
		if !pl.wants(families[fi]) || pl.requested[fi].IsValid() {
			continue
		}
		if o := a.conflictOn(&pl.me, pl.self, addr); o != nil {
			if clashWith[fi] == nil {
				clashAddr[fi], clashWith[fi] = addr, o
			}
			continue
		}
		pl.group[fi] = append(pl.group[fi], addr)
	}
	for fi, o := range clashWith {
		if o != nil && len(pl.group[fi]) == 0 {
			if !pl.me.sameGroup(&o.holder) {
				return pl.me.shareError(fmt.Sprintf("address %s of sharing key %q", clashAddr[fi], pl.me.sharingKey), &o.holder)
			}
			p, _ := pl.me.clash(&o.holder)
			return errorf(ReasonSharingClash, "Services with sharing key %q hold %s, but port %s/%d is already used on it by %s",
				pl.me.sharingKey, clashAddr[fi], p.Protocol, p.Port, o.name)
		}
	}
	return nil
}

type pickResult int

const (
	pickOK pickResult = iota
	pickNoFamily
	pickExhausted
	pickNotGroup // the sharing group's address is not in this pool
	pickNotRequested
)

type choice struct {
	addr  netip.Addr
	r     *prange // set for a fresh address, whose range cursor moves when it is taken
	pos   u128
	fresh bool
}

func (c choice) take() {
	if c.fresh {
		c.r.advance(c.pos)
	}
}

// pick chooses the address of family f the Service would get from p.
func (a *Allocator) pick(p *poolState, f Family, pl *plan) (choice, pickResult) {
	fi := famIdx(f)
	if r := pl.requested[fi]; r.IsValid() {
		if !p.contains(r) {
			return choice{}, pickNotRequested
		}
		return choice{addr: r}, pickOK
	}
	if len(pl.group[fi]) > 0 {
		for _, addr := range pl.group[fi] {
			if p.contains(addr) {
				return choice{addr: addr}, pickOK
			}
		}
		return choice{}, pickNotGroup
	}
	if pl.self != nil {
		for _, addr := range pl.self.addrs {
			if FamilyOf(addr) == f && p.contains(addr) && a.conflictOn(&pl.me, pl.self, addr) == nil {
				return choice{addr: addr}, pickOK
			}
		}
	}
	if r := pl.prefer[fi]; r.IsValid() && p.contains(r) && a.holders[r].len() == 0 && !(p.AvoidBuggyIPs && isBuggy(r)) {
		return choice{addr: r}, pickOK
	}
	if len(p.famRanges[fi]) == 0 {
		return choice{}, pickNoFamily
	}
	if pl.behind(p.Name, f) {
		return choice{}, pickExhausted
	}
	for _, r := range p.famRanges[fi] {
		if addr, pos, ok := a.used.free(r); ok {
			return choice{addr: addr, r: r, pos: pos, fresh: true}, pickOK
		}
	}
	return choice{}, pickExhausted
}

// firstPool returns the first eligible pool that can give every family in fams, and the choices.
func (a *Allocator) firstPool(pl *plan, fams []Family, fails *failures, buf *[2]choice) ([]choice, *poolState) {
	for _, p := range pl.eligible {
		got := buf[:0]
		for _, f := range fams {
			c, res := a.pick(p, f, pl)
			if res != pickOK {
				fails.add(p, f, res)
				break
			}
			got = append(got, c)
		}
		if len(got) == len(fams) {
			return got, p
		}
	}
	return nil, nil
}

// failures collects why pools could not serve a Service, to explain it in one message.
type failures struct {
	exhausted [2][]string
}

func (fs *failures) add(p *poolState, f Family, res pickResult) {
	fi := famIdx(f)
	if res == pickExhausted && !slices.Contains(fs.exhausted[fi], p.Name) {
		fs.exhausted[fi] = append(fs.exhausted[fi], p.Name)
	}
}

func (fs *failures) err(pl *plan) error {
	for _, addrs := range pl.group {
		if len(addrs) == 0 {
			continue
		}
		inReach := false
		for _, p := range pl.eligible {
			if slices.ContainsFunc(addrs, p.contains) {
				inReach = true
			}
		}
		if !inReach {
			return errorf(ReasonSharingClash, "Services with sharing key %q hold %s, which is not in any pool this Service may use (pools: %s)",
				pl.me.sharingKey, addrs[0], poolNames(pl.eligible))
		}
	}
	if pl.policy == RequireDualStack {
		dual := false
		for _, p := range pl.eligible {
			if len(p.famRanges[0]) > 0 && len(p.famRanges[1]) > 0 {
				dual = true
			}
		}
		if !dual {
			return errorf(ReasonDualStack, "the Service requires dual-stack, but no pool it may use has both IPv4 and IPv6 addresses (pools: %s)",
				poolNames(pl.eligible))
		}
	}
	var full []string
	var lines []Line
	for fi, names := range fs.exhausted {
		if len(names) > 0 {
			full = append(full, fmt.Sprintf("no free %s address left in %s", families[fi], plural("pool", names)))
		}
		for _, n := range names {
			lines = append(lines, Line{Pool: n, Family: families[fi]})
		}
	}
	if len(full) > 0 {
		return &Error{Reason: ReasonPoolExhausted, Message: strings.Join(full, "; "), Exhausted: lines}
	}
	for _, f := range pl.fams() {
		has := false
		for _, p := range pl.eligible {
			if len(p.famRanges[famIdx(f)]) > 0 {
				has = true
			}
		}
		if !has {
			return errorf(ReasonNoPool, "no pool this Service may use has %s addresses (pools: %s)", f, poolNames(pl.eligible))
		}
	}
	return errorf(ReasonNoPool, "no pool this Service may use can give it addresses (pools: %s)", poolNames(pl.eligible))
}

func (a *Allocator) noPoolError(pl *plan) error {
	req := &pl.req
	if len(req.Pools) > 0 {
		var why []string
		for _, name := range req.Pools {
			if p := a.pools[name]; p != nil {
				if w := a.whyNot(p, pl); w != "" && !slices.Contains(why, w) {
					why = append(why, w)
				}
			}
		}
		return errorf(ReasonNoPool, "none of the pools the Service names can serve it: %s", strings.Join(why, "; "))
	}
	return errorf(ReasonNoPool, "no usable %s pool with autoAssign serves this Service; name a pool or create one", strings.ToLower(string(pl.visibility())))
}

// whyNot explains why p may not serve the Service.
func (a *Allocator) whyNot(p *poolState, pl *plan) string {
	switch {
	case p.Deleting:
		return fmt.Sprintf("pool %s is being deleted", p.Name)
	case len(p.conflicts) > 0:
		return fmt.Sprintf("pool %s is in conflict with %s", p.Name, joinNames(p.conflicts))
	case p.visibility() != pl.visibility():
		return fmt.Sprintf("pool %s serves only %s Services", p.Name, strings.ToLower(string(p.visibility())))
	case !p.matches(&pl.req):
		return fmt.Sprintf("pool %s is reserved for other Services", p.Name)
	case len(pl.req.Pools) > 0 && !slices.Contains(pl.req.Pools, p.Name):
		return fmt.Sprintf("pool %s is not one the Service names", p.Name)
	case len(pl.req.Pools) == 0 && !p.AutoAssign:
		return fmt.Sprintf("pool %s does not assign addresses automatically", p.Name)
	}
	return fmt.Sprintf("pool %s cannot serve the Service", p.Name)
}

func (a *Allocator) conflictingPool(addr netip.Addr) *poolState {
	for _, p := range a.conflicting {
		if p.contains(addr) {
			return p
		}
	}
	return nil
}

func poolNames(pools []*poolState) string {
	if len(pools) == 0 {
		return "none"
	}
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

func joinNames(names []string) string { return strings.Join(names, ", ") }

func quoteNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func plural(word string, names []string) string {
	if len(names) == 1 {
		return word + " " + names[0]
	}
	return word + "s " + strings.Join(names, ", ")
}

func joinFamilies(fams []Family) string {
	if len(fams) == 2 {
		return string(fams[0]) + " and " + string(fams[1])
	}
	return string(fams[0])
}

func sameNames(x, y []string) bool {
	if len(x) != len(y) {
		return false
	}
	for _, n := range x {
		if !slices.Contains(y, n) {
			return false
		}
	}
	return true
}
