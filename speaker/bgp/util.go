package bgp

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
)

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

// sortedKeys returns m's keys in order, so that work on maps happens in
// a reproducible order (and logs read the same from run to run).
func sortedKeys[K interface {
	comparable
	cmp.Ordered
}, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}

func compareStrings(a, b string) int { return cmp.Compare(a, b) }

// comparePrefixes orders prefixes by address, then length.
func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

func sortStrings(s []string) { slices.Sort(s) }

func sortPeers(p []peerConfig) {
	slices.SortFunc(p, func(a, b peerConfig) int { return cmp.Compare(a.name, b.name) })
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	return slices.SortedFunc(maps.Keys(m), comparePrefixes)
}
