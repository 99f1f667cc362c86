package ipam

import (
	"math/big"
	"net/netip"

	"github.com/google/btree"
)

// u128 is an address as a number, so that ranges, cursors and sizes are plain arithmetic.
// IPv4 addresses use only lo.
type u128 struct{ hi, lo uint64 }

func (x u128) less(y u128) bool { return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo) }

func (x u128) next() u128 {
	if x.lo == ^uint64(0) {
		return u128{x.hi + 1, 0}
	}
	return u128{x.hi, x.lo + 1}
}

func (x u128) prev() u128 {
	if x.lo == 0 {
		return u128{x.hi - 1, ^uint64(0)}
	}
	return u128{x.hi, x.lo - 1}
}

// sub returns x-y for x >= y.
func (x u128) sub(y u128) u128 {
	lo := x.lo - y.lo
	hi := x.hi - y.hi
	if x.lo < y.lo {
		hi--
	}
	return u128{hi, lo}
}

func (x u128) big() *big.Int {
	b := new(big.Int).SetUint64(x.hi)
	b.Lsh(b, 64)
	return b.Or(b, new(big.Int).SetUint64(x.lo))
}

func u128Of(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var x u128
	for i := 0; i < 8; i++ {
		x.hi = x.hi<<8 | uint64(b[i])
		x.lo = x.lo<<8 | uint64(b[i+8])
	}
	return x
}

func addrOf(x u128, fam Family) netip.Addr {
	if fam == IPv4 {
		v := uint32(x.lo)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[7-i] = byte(x.hi >> (8 * i))
		b[15-i] = byte(x.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

// Pools with avoidBuggyIPs must skip IPv4 .0 and .255 without walking over them. Numbering the
// other IPv4 addresses densely (254 per /24) turns "skip the buggy ones" into "search a plain
// range" in a second interval set that holds only non-buggy addresses, so the search stays
// O(log n) however the used addresses and the buggy ones interleave.

func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// dense maps a non-buggy IPv4 address to its index among non-buggy addresses.
func dense(v uint64) u128 { return u128{0, (v>>8)*254 + (v & 0xff) - 1} }

// sparse is the inverse of dense.
func sparse(d u128) u128 { return u128{0, (d.lo/254)<<8 | (d.lo%254 + 1)} }

// denseRange returns the dense bounds of the non-buggy addresses in the IPv4 range [lo, hi].
func denseRange(lo, hi uint64) (u128, u128, bool) {
	switch lo & 0xff {
	case 0:
		lo++
	case 255:
		lo += 2
	}
	switch hi & 0xff {
	case 255:
		hi--
	case 0:
		if hi < 2 {
			return u128{}, u128{}, false
		}
		hi -= 2
	}
	if lo > hi {
		return u128{}, u128{}, false
	}
	return dense(lo), dense(hi), true
}

// span is a maximal run of used addresses. Spans in a set never touch, so the address right after
// a span is always free: that is what makes the free search a single lookup.
type span struct{ from, to u128 }

type spanSet struct{ t *btree.BTreeG[span] }

func newSpanSet() spanSet {
	return spanSet{btree.NewG(32, func(a, b span) bool { return a.from.less(b.from) })}
}

// covering returns the span that holds x.
func (s spanSet) covering(x u128) (span, bool) {
	var found span
	var ok bool
	s.t.DescendLessOrEqual(span{from: x}, func(sp span) bool {
		found, ok = sp, !sp.to.less(x)
		return false
	})
	return found, ok
}

// add marks x used; x must be free.
func (s spanSet) add(x u128, max u128) {
	var before, after span
	var hasBefore, hasAfter bool
	if x != (u128{}) {
		before, hasBefore = s.covering(x.prev())
	}
	if x != max {
		after, hasAfter = s.t.Get(span{from: x.next()})
	}
	switch {
	case hasBefore && hasAfter:
		s.t.Delete(after)
		s.t.ReplaceOrInsert(span{before.from, after.to})
	case hasBefore:
		s.t.ReplaceOrInsert(span{before.from, x})
	case hasAfter:
		s.t.Delete(after)
		s.t.ReplaceOrInsert(span{x, after.to})
	default:
		s.t.ReplaceOrInsert(span{x, x})
	}
}

// remove marks x free; x must be used.
func (s spanSet) remove(x u128) {
	sp, ok := s.covering(x)
	if !ok {
		return
	}
	if sp.from == x {
		s.t.Delete(sp)
	} else {
		s.t.ReplaceOrInsert(span{sp.from, x.prev()})
	}
	if sp.to != x {
		s.t.ReplaceOrInsert(span{x.next(), sp.to})
	}
}

// firstFree returns the lowest free address in [lo, hi].
func (s spanSet) firstFree(lo, hi u128) (u128, bool) {
	sp, ok := s.covering(lo)
	if !ok {
		return lo, true
	}
	if !sp.to.less(hi) {
		return u128{}, false
	}
	return sp.to.next(), true
}

// count returns how many addresses in [lo, hi] are used. It visits the spans inside the range,
// not the addresses.
func (s spanSet) count(lo, hi u128) u128 {
	var n u128
	add := func(sp span) {
		if sp.from.less(lo) {
			sp.from = lo
		}
		if hi.less(sp.to) {
			sp.to = hi
		}
		if sp.to.less(sp.from) {
			return
		}
		size := sp.to.sub(sp.from)
		n = addU128(addU128(n, size), u128{0, 1})
	}
	if sp, ok := s.covering(lo); ok && sp.from.less(lo) {
		add(sp)
	}
	s.t.AscendGreaterOrEqual(span{from: lo}, func(sp span) bool {
		if hi.less(sp.from) {
			return false
		}
		add(sp)
		return true
	})
	return n
}

func addU128(x, y u128) u128 {
	lo := x.lo + y.lo
	hi := x.hi + y.hi
	if lo < x.lo {
		hi++
	}
	return u128{hi, lo}
}

// usedSet is every address some Service holds, whatever pool it came from, so that overlapping
// or conflicting pools can never hand out one address twice.
type usedSet struct {
	v4, v4dense, v6 spanSet
}

func newUsedSet() usedSet {
	return usedSet{newSpanSet(), newSpanSet(), newSpanSet()}
}

var (
	maxV4 = u128{0, 1<<32 - 1}
	maxV6 = u128{^uint64(0), ^uint64(0)}
)

// set returns the spans a range is searched in.
func (u *usedSet) set(r *prange) spanSet {
	switch {
	case r.fam == IPv6:
		return u.v6
	case r.dense:
		return u.v4dense
	}
	return u.v4
}

func (u *usedSet) add(a netip.Addr) {
	x := u128Of(a)
	if a.Is6() {
		u.v6.add(x, maxV6)
		return
	}
	u.v4.add(x, maxV4)
	if !isBuggy(a) {
		u.v4dense.add(dense(x.lo), maxV4)
	}
}

func (u *usedSet) remove(a netip.Addr) {
	x := u128Of(a)
	if a.Is6() {
		u.v6.remove(x)
		return
	}
	u.v4.remove(x)
	if !isBuggy(a) {
		u.v4dense.remove(dense(x.lo))
	}
}

// free finds a free address in r from its cursor on, wrapping round to its start. It returns the
// address and its position in r's search space.
func (u *usedSet) free(r *prange) (netip.Addr, u128, bool) {
	if r.empty {
		return netip.Addr{}, u128{}, false
	}
	s := u.set(r)
	x, ok := s.firstFree(r.cursor, r.hi)
	if !ok && r.lo.less(r.cursor) {
		x, ok = s.firstFree(r.lo, r.cursor.prev())
	}
	if !ok {
		return netip.Addr{}, u128{}, false
	}
	if r.dense {
		return addrOf(sparse(x), IPv4), x, true
	}
	return addrOf(x, r.fam), x, true
}

// advance moves r's cursor past x, the position just handed out.
func (r *prange) advance(x u128) {
	if x == r.hi {
		r.cursor = r.lo
		return
	}
	r.cursor = x.next()
}
