package ipam

import (
	"errors"
	"slices"
	"testing"
)

func prefer(ss ...string) opt { return func(r *Request) { r.Prefer = addrs(ss...) } }

func behind(lines ...Line) opt { return func(r *Request) { r.Behind = lines } }

// allocUnkept expects the Service to get want and to be told about unkept preferred addresses.
func allocUnkept(r Request, want []string, unkept ...Unkept) step {
	return step{"allocate " + r.Service, func(t *testing.T, a *Allocator) {
		t.Helper()
		res := allocate(t, a, r, want)
		if !slices.Equal(res.Unkept, unkept) {
			t.Errorf("Allocate(%s) unkept = %+v, want %+v", r.Service, res.Unkept, unkept)
		}
	}}
}

func unkept(addr string, reason Reason, holder string) Unkept {
	return Unkept{Addr: addrs(addr)[0], Reason: reason, Holder: holder}
}

func TestAllocate_PreferredAddressesComeBackWhenFree(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "a recreated Service gets its recorded address back, not the next free one",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/one"), "172.31.0.10"),
			allocUnkept(svc("default/web", prefer("172.31.0.15")), []string{"172.31.0.15"}),
		},
	}, {
		name:  "a recreated dual-stack Service gets both recorded addresses back",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{
			allocUnkept(svc("default/web", stack(RequireDualStack, IPv6, IPv4), prefer("172.31.0.17", "fd31::13")),
				[]string{"fd31::13", "172.31.0.17"}),
		},
	}, {
		name:  "the pool holding the recorded address is tried first",
		pools: []Pool{created(pool("lab-a", v4a), 1), created(pool("lab-b", v4b), 2)},
		steps: []step{allocUnkept(svc("default/web", prefer("172.31.1.12")), []string{"172.31.1.12"})},
	}, {
		name:  "a recorded address another Service took is named with its holder, and another is given",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/thief", ips("172.31.0.15")), "172.31.0.15"),
			allocUnkept(svc("default/web", prefer("172.31.0.15")), []string{"172.31.0.10"},
				unkept("172.31.0.15", ReasonInUse, "default/thief")),
		},
	}, {
		name:  "a recorded address of a family the Service does not use is ignored",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{allocUnkept(svc("default/web", prefer("fd31::15")), []string{"172.31.0.10"},
			unkept("fd31::15", ReasonWrongFamily, ""))},
	}, {
		name:  "a recorded address outside every pool is ignored",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocUnkept(svc("default/web", prefer("192.0.2.7")), []string{"172.31.0.10"},
			unkept("192.0.2.7", ReasonNotInPool, ""))},
	}, {
		name:  "a recorded address in a pool the Service may not use is not given",
		pools: []Pool{pool("lab-a", v4a), internalPool("inside", v4b)},
		steps: []step{allocUnkept(svc("default/web", prefer("172.31.1.12")), []string{"172.31.0.10"},
			unkept("172.31.1.12", ReasonNotInPool, ""))},
	}, {
		name:  "an explicit request wins over the record, silently",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocUnkept(svc("default/web", ips("172.31.0.12"), prefer("172.31.0.15")), []string{"172.31.0.12"})},
	}, {
		name:  "a Service that holds addresses keeps them whatever its record says",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			allocUnkept(svc("default/web", prefer("172.31.0.15")), []string{"172.31.0.10"}),
			holding("default/web", "172.31.0.10"),
		},
	}, {
		name:  "a recorded address is free again after its holder left",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/thief", ips("172.31.0.15")), "172.31.0.15"),
			release("default/thief", "172.31.0.15"),
			allocUnkept(svc("default/web", prefer("172.31.0.15")), []string{"172.31.0.15"}),
		},
	}})
}

func TestAllocate_UnkeptRecordIsReportedWhenNothingIsLeft(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool("tiny", "172.31.0.10")})
	if _, err := a.Allocate(svc("default/thief")); err != nil {
		t.Fatal(err)
	}
	_, err := a.Allocate(svc("default/web", prefer("172.31.0.10")))
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonPoolExhausted {
		t.Fatalf("Allocate = %v, want PoolExhausted", err)
	}
	if want := []Unkept{unkept("172.31.0.10", ReasonInUse, "default/thief")}; !slices.Equal(e.Unkept, want) {
		t.Errorf("unkept = %+v, want %+v", e.Unkept, want)
	}
}

func TestAllocate_ServicesBehindOthersGetNoFreshAddressFromThatLine(t *testing.T) {
	line := Line{Pool: "lab-a", Family: IPv4}
	runScenarios(t, []scenario{{
		name:  "behind in the only pool: exhausted, and the line is named",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{allocFails(svc("default/web", behind(line)), ReasonPoolExhausted, msg("no free IPv4 address left in pool lab-a"))},
	}, {
		name:  "behind in one family only: the other family is still given",
		pools: []Pool{pool("lab-a", v4a, v6a)},
		steps: []step{alloc(svc("default/web", stack(SingleStack, IPv6), behind(line)), "fd31::10")},
	}, {
		name:  "behind in one pool: the next pool serves",
		pools: []Pool{created(pool("lab-a", v4a), 1), created(pool("lab-b", v4b), 2)},
		steps: []step{allocFrom(svc("default/web", behind(line)), "lab-b", "172.31.1.10")},
	}, {
		name:  "a requested address is not fresh: no line for it",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{alloc(svc("default/web", ips("172.31.0.14"), behind(line)), "172.31.0.14")},
	}, {
		name:  "a recorded address is not fresh: it comes back even to a Service behind others",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{alloc(svc("default/web", prefer("172.31.0.14"), behind(line)), "172.31.0.14")},
	}, {
		name:  "a Service behind others keeps what it holds",
		pools: []Pool{pool("lab-a", v4a)},
		steps: []step{
			alloc(svc("default/web"), "172.31.0.10"),
			alloc(svc("default/web", behind(line)), "172.31.0.10"),
		},
	}})
}

func TestAllocate_ExhaustionNamesTheLinesTheServiceWaitsIn(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool("v4", "172.31.0.10"), pool("dual", "172.31.1.10", "fd31::10")})
	for _, s := range []string{"default/a", "default/b"} {
		if _, err := a.Allocate(svc(s)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.Allocate(svc("default/web"))
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonPoolExhausted {
		t.Fatalf("Allocate = %v, want PoolExhausted", err)
	}
	got := slices.Clone(e.Exhausted)
	slices.SortFunc(got, func(x, y Line) int {
		if x.Pool < y.Pool {
			return -1
		}
		if x.Pool > y.Pool {
			return 1
		}
		return 0
	})
	if want := []Line{{"dual", IPv4}, {"v4", IPv4}}; !slices.Equal(got, want) {
		t.Errorf("exhausted = %v, want %v", got, want)
	}
}
