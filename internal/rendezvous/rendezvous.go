// Package rendezvous scores pairs of names for rendezvous (highest random
// weight) hashing: every process computes the same score for the same pair,
// scores look random, and adding or removing one name changes no other
// pair's score. The speakers use it to rank the owners of an address and to
// pick whom each heartbeat goes to.
package rendezvous

import "hash/fnv"

// Score is the weight of the pair (a, b).
func Score(a, b string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(a))
	h.Write([]byte{0})
	h.Write([]byte(b))
	return Mix(h.Sum64())
}

// Mix spreads a hash's bits (splitmix64's finalizer): FNV alone clusters on
// similar inputs, such as node names that differ in one digit.
func Mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
