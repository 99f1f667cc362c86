package ipam

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

func deleting(p Pool) Pool {
	p.Deleting = true
	return p
}

func from(pool string) opt { return func(r *Request) { r.From = pool } }

// users expects PoolUsers to report exactly want: per pool, the count and, for a pool being
// deleted, the names.
func users(want map[string]PoolUsers) step {
	return step{"pool users", func(t *testing.T, a *Allocator) {
		t.Helper()
		got := a.PoolUsers()
		same := maps.EqualFunc(got, want, func(x, y PoolUsers) bool {
			return x.Count == y.Count && slices.Equal(x.Services, y.Services)
		})
		if !same {
			t.Errorf("PoolUsers() = %v, want %v", got, want)
		}
	}}
}

// Every edit of the pools keeps every address: a range moved to another pool, a changed
// visibility, a split, a shrink, a deletion. The pool that announces an address follows it to
// the pool that holds it now.
func TestAllocate_PoolEditsNeverRenumber(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a range moved to another pool in one edit follows its addresses there",
		pools: []Pool{pool("lab-a", v4a, v4b), pool("lab-b", v6b)},
		steps: []step{
			allocFrom(svc("default/web"), "lab-a", "172.31.0.10"),
			allocFrom(svc("default/other", ips("172.31.1.12")), "lab-a", "172.31.1.12"),
			setPools(pool("lab-a", v4b), pool("lab-b", v4a, v6b)),
			allocFrom(svc("default/web"), "lab-b", "172.31.0.10"),
			allocFrom(svc("default/other", ips("172.31.1.12")), "lab-a", "172.31.1.12"),
			users(map[string]PoolUsers{"lab-a": {Count: 1}, "lab-b": {Count: 1}}),
			counts("lab-b", IPv4, "10", "1", "9"),
		},
	}, {
		name:  "a range added to the other pool first, then taken from the first",
		pools: []Pool{created(pool("lab-a", v4a), 1), created(pool("lab-b", v4b), 2)},
		steps: []step{
			allocFrom(svc("default/web"), "lab-a", "172.31.0.10"),
			allocFrom(svc("default/b", inPools("lab-b")), "lab-b", "172.31.1.10"),
			// lab-b overlaps the older lab-a: in conflict, it hands out nothing, and its own
			// Service keeps its address.
			setPools(created(pool("lab-a", v4a), 1), created(pool("lab-b", v4b, v4a), 2)),
			allocFrom(svc("default/web"), "lab-a", "172.31.0.10"),
			allocWarns(svc("default/b", inPools("lab-b")), "lab-b", "in conflict with lab-a", "172.31.1.10"),
			setPools(created(pool("lab-a", "172.31.2.0/24"), 1), created(pool("lab-b", v4b, v4a), 2)),
			allocFrom(svc("default/web"), "lab-b", "172.31.0.10"),
			allocFrom(svc("default/b", inPools("lab-b")), "lab-b", "172.31.1.10"),
		},
	}, {
		name:  "a range taken from the first pool first, then added to the other",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			allocFrom(svc("default/web"), "lab-a", "172.31.0.10"),
			setPools(pool("lab-a", "172.31.2.0/24"), pool("lab-b", v4b)),
			allocWarns(svc("default/web"), "lab-a", "172.31.0.10 is no longer in any pool", "172.31.0.10"),
			setPools(pool("lab-a", "172.31.2.0/24"), pool("lab-b", v4b, v4a)),
			allocFrom(svc("default/web"), "lab-b", "172.31.0.10"),
		},
	}, {
		name:  "a range moved to a pool the Service does not name stays with a warning until it names it",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			allocFrom(svc("default/web", inPools("lab-a")), "lab-a", "172.31.0.10"),
			setPools(pool("lab-a", "172.31.2.0/24"), pool("lab-b", v4b, v4a)),
			allocWarns(svc("default/web", inPools("lab-a")), "lab-b",
				"172.31.0.10 is in pool lab-b, which the Service does not name (it names lab-a)", "172.31.0.10"),
			allocFrom(svc("default/web", inPools("lab-a", "lab-b")), "lab-b", "172.31.0.10"),
		},
	}, {
		name:  "a pool changing its visibility keeps its Services, and hands out only to the other kind",
		pools: []Pool{pool("lab-a", v4a), internalPool("lab-i", v4b)},
		steps: []step{
			alloc(svc("default/ext"), "172.31.0.10"),
			alloc(svc("default/int", asInternal()), "172.31.1.10"),
			setPools(internalPool("lab-a", v4a), pool("lab-i", v4b)),
			allocWarns(svc("default/ext"), "lab-a", "172.31.0.10 is in pool lab-a, which serves only internal Services", "172.31.0.10"),
			allocWarns(svc("default/int", asInternal()), "lab-i", "172.31.1.10 is in pool lab-i, which serves only external Services", "172.31.1.10"),
			allocFrom(svc("default/new-ext"), "lab-i", "172.31.1.11"),
			allocFrom(svc("default/new-int", asInternal()), "lab-a", "172.31.0.11"),
			// Changing it back clears the warnings.
			setPools(pool("lab-a", v4a), internalPool("lab-i", v4b)),
			allocFrom(svc("default/ext"), "lab-a", "172.31.0.10"),
			allocFrom(svc("default/int", asInternal()), "lab-i", "172.31.1.10"),
		},
	}, {
		name:  "a Service that asks for something else after a pool edit moves",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b), internalPool("lab-i", "172.31.2.10-172.31.2.19")},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(internalPool("lab-a", v4a), pool("lab-b", v4b), internalPool("lab-i", "172.31.2.10-172.31.2.19")),
			allocWarns(svc("default/web"), "lab-a", "which serves only internal Services", "172.31.0.10"),
			allocFrom(svc("default/web", inPools("lab-b")), "lab-b", "172.31.1.10"),
			counts("lab-a", IPv4, "10", "0", "10"),
		},
	}, {
		name:  "a Service that becomes internal after its pool did keeps its address",
		pools: []Pool{pool("lab-a", v4a), internalPool("lab-i", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(internalPool("lab-a", v4a), internalPool("lab-i", v4b)),
			allocWarns(svc("default/web"), "lab-a", "which serves only internal Services", "172.31.0.10"),
			allocFrom(svc("default/web", asInternal()), "lab-a", "172.31.0.10"),
		},
	}, {
		name:  "a split pool keeps every address, each now announced by its half",
		pools: []Pool{pool("lab-a", "172.31.0.0/28")},
		steps: []step{
			alloc(svc("default/low"), "172.31.0.0"),
			alloc(svc("default/high", ips("172.31.0.12")), "172.31.0.12"),
			alloc(svc("default/named", inPools("lab-a"), ips("172.31.0.13")), "172.31.0.13"),
			setPools(pool("lab-a", "172.31.0.0/29"), pool("lab-a2", "172.31.0.8/29")),
			allocFrom(svc("default/low"), "lab-a", "172.31.0.0"),
			allocFrom(svc("default/high", ips("172.31.0.12")), "lab-a2", "172.31.0.12"),
			allocWarns(svc("default/named", inPools("lab-a"), ips("172.31.0.13")), "lab-a2",
				"172.31.0.13 is in pool lab-a2, which the Service does not name", "172.31.0.13"),
			users(map[string]PoolUsers{"lab-a": {Count: 1}, "lab-a2": {Count: 2}}),
		},
	}, {
		name:  "a shrunk pool keeps announcing what left it",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/other"), "172.31.0.11"),
			setPools(pool("lab-a", "172.31.0.11-172.31.0.19")),
			allocWarns(svc("default/web"), "lab-a", "172.31.0.10 is no longer in any pool", "172.31.0.10"),
			users(map[string]PoolUsers{"lab-a": {Count: 2}}),
			// Nobody else gets the address.
			allocFails(svc("default/third", ips("172.31.0.10")), ReasonNotInPool, msg("172.31.0.10")),
		},
	}, {
		name:  "a pool being deleted hands out nothing and is kept by the Services it announces",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/api", inPools("lab-a")), "172.31.0.11"),
			alloc(svc("default/left"), "172.31.0.12"),
			setPools(pool("lab-a", "172.31.0.10-172.31.0.11"), pool("lab-b", v4b)),
			setPools(deleting(pool("lab-a", "172.31.0.10-172.31.0.11")), pool("lab-b", v4b)),
			allocWarns(svc("default/web"), "lab-a", "172.31.0.10 is only in pool lab-a, which is being deleted", "172.31.0.10"),
			allocWarns(svc("default/api", inPools("lab-a")), "lab-a", `pool "lab-a" named by the Service is being deleted`, "172.31.0.11"),
			allocWarns(svc("default/left"), "lab-a", "172.31.0.12 is no longer in any pool", "172.31.0.12"),
			users(map[string]PoolUsers{"lab-a": {Count: 3, Services: []string{"default/api", "default/left", "default/web"}}}),
			counts("lab-a", IPv4, "2", "2", "0"),
			allocFails(svc("default/new", inPools("lab-a")), ReasonNoPool, msg("pool lab-a is being deleted")),
			allocFails(svc("default/new", ips("172.31.0.10")), ReasonNotInPool, msg("pool lab-a is being deleted")),
			allocFrom(svc("default/new"), "lab-b", "172.31.1.10"),
			release("default/left", "172.31.0.12"),
			release("default/api", "172.31.0.11"),
			users(map[string]PoolUsers{"lab-a": {Count: 1, Services: []string{"default/web"}}, "lab-b": {Count: 1}}),
			release("default/web", "172.31.0.10"),
			users(map[string]PoolUsers{"lab-b": {Count: 1}}),
		},
	}, {
		name:  "a pool that takes over the range of one being deleted is usable at once and takes its Services",
		pools: []Pool{created(pool("lab-a", v4a), 1)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			setPools(created(deleting(pool("lab-a", v4a)), 1), created(pool("lab-new", v4a), 2)),
			allocFrom(svc("default/web"), "lab-new", "172.31.0.10"),
			allocFrom(svc("default/other"), "lab-new", "172.31.0.11"),
			users(map[string]PoolUsers{"lab-new": {Count: 2}}),
		},
	}})
}

// A new leader restores what Services hold before pools edited while no leader ran can move
// anything; the pool they were announced with comes from their record.
func TestRestore_AfterPoolEditsKeepsEveryAddress(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "edited pools move nothing",
		pools: []Pool{internalPool("lab-a", "172.31.0.10-172.31.0.11"), pool("lab-b", v4b)},
		steps: []step{
			restore(svc("default/vis", from("lab-a")), "172.31.0.10"),
			restore(svc("default/moved", inPools("lab-a"), from("lab-a")), "172.31.1.10"),
			restore(svc("default/shrunk", from("lab-a")), "172.31.0.15"),
			restore(svc("default/gone", from("lab-x")), "172.31.5.5"),
			allocWarns(svc("default/vis"), "lab-a", "which serves only internal Services", "172.31.0.10"),
			allocWarns(svc("default/moved", inPools("lab-a")), "lab-b", "which the Service does not name", "172.31.1.10"),
			allocWarns(svc("default/shrunk"), "lab-a", "no longer in any pool", "172.31.0.15"),
			allocWarns(svc("default/gone"), "lab-x", "no longer in any pool", "172.31.5.5"),
			users(map[string]PoolUsers{"lab-a": {Count: 2}, "lab-b": {Count: 1}, "lab-x": {Count: 1}}),
		},
	}, {
		name:  "a Service restored from a pool being deleted keeps it even without a record",
		pools: []Pool{deleting(pool("lab-a", v4a)), pool("lab-b", v4b)},
		steps: []step{
			restore(svc("default/web"), "172.31.0.10"),
			allocWarns(svc("default/web"), "lab-a", "which is being deleted", "172.31.0.10"),
			users(map[string]PoolUsers{"lab-a": {Count: 1, Services: []string{"default/web"}}}),
		},
	}, {
		name:  "a named pool changed while no leader ran moves the Service",
		pools: []Pool{pool("lab-a", v4a), pool("lab-b", v4b)},
		steps: []step{
			restore(svc("default/web", inPools("lab-b"), from("lab-a")), "172.31.0.10"),
			allocFrom(svc("default/web", inPools("lab-b")), "lab-b", "172.31.1.10"),
		},
	}})
}

// PoolUsers counts a Service once, for the pool that announces it, also when it shares.
func TestPoolUsers_CountsServicesNotAddresses(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool("lab-a", v4a, v6a)})
	for i := range 3 {
		r := svc(fmt.Sprintf("default/s%d", i), key("k"), withPorts(fmt.Sprintf("TCP/%d", 80+i)), stack(RequireDualStack, IPv4, IPv6))
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.PoolUsers(); got["lab-a"].Count != 3 || len(got) != 1 || got["lab-a"].Services != nil {
		t.Errorf("PoolUsers() = %v, want 3 Services of lab-a, unnamed", got)
	}
}

func TestSetPools_ReturnsTheServicesWhosePoolStandingChanged(t *testing.T) {
	a := New()
	a.SetPools([]Pool{created(pool("lab-a", "172.31.0.10-172.31.0.11"), 1), created(pool("lab-b", "172.31.1.10"), 2)})
	allocate(t, a, svc("default/a"), []string{"172.31.0.10"})
	allocate(t, a, svc("default/b"), []string{"172.31.0.11"})
	allocate(t, a, svc("default/named", inPools("lab-b")), []string{"172.31.1.10"})

	steps := []struct {
		name  string
		pools []Pool
		want  []string
	}{
		{"same pools again", []Pool{created(pool("lab-a", "172.31.0.10-172.31.0.11"), 1), created(pool("lab-b", "172.31.1.10"), 2)}, nil},
		{"lab-a shrinks past b's address", []Pool{created(pool("lab-a", "172.31.0.10"), 1), created(pool("lab-b", "172.31.1.10"), 2)}, []string{"default/b"}},
		{"lab-a becomes internal", []Pool{created(internalPool("lab-a", "172.31.0.10"), 1), created(pool("lab-b", "172.31.1.10"), 2)}, []string{"default/a", "default/b"}},
		{"lab-b is being deleted", []Pool{created(internalPool("lab-a", "172.31.0.10"), 1), deleting(created(pool("lab-b", "172.31.1.10"), 2))}, []string{"default/named"}},
		{"lab-b is replaced under its name", []Pool{created(internalPool("lab-a", "172.31.0.10"), 1), created(pool("lab-b", "172.31.1.10"), 3)}, []string{"default/named"}},
	}
	for _, s := range steps {
		if got := a.SetPools(s.pools); !slices.Equal(got, s.want) {
			t.Errorf("%s: SetPools moved %v, want %v", s.name, got, s.want)
		}
	}
}
