package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go4.org/netipx"
	"k8s.io/apimachinery/pkg/labels"
)

// rs parses CIDRs, "a-b" ranges and single addresses.
func rs(specs ...string) []netipx.IPRange {
	var out []netipx.IPRange
	for _, s := range specs {
		switch {
		case strings.Contains(s, "/"):
			out = append(out, netipx.RangeOfPrefix(netip.MustParsePrefix(s)))
		case strings.Contains(s, "-"):
			out = append(out, netipx.MustParseIPRange(s))
		default:
			a := netip.MustParseAddr(s)
			out = append(out, netipx.IPRangeFrom(a, a))
		}
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func strs(as []netip.Addr) []string {
	if len(as) == 0 {
		return nil
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// pool is an external, auto-assigning pool, the common case.
func pool(name string, ranges ...string) Pool {
	return Pool{Name: name, Ranges: rs(ranges...), Visibility: External, AutoAssign: true}
}

func internalPool(name string, ranges ...string) Pool {
	p := pool(name, ranges...)
	p.Visibility = Internal
	return p
}

func manual(p Pool) Pool {
	p.AutoAssign = false
	return p
}

func avoidBuggy(p Pool) Pool {
	p.AvoidBuggyIPs = true
	return p
}

func created(p Pool, unix int64) Pool {
	p.CreatedUnix = unix
	return p
}

// reserved reserves p for Services whose namespace and labels match the selectors ("" = nil).
func reserved(p Pool, priority int, nsSelector, svcSelector string) Pool {
	p.Reserved = true
	p.Priority = priority
	if nsSelector != "" {
		p.NamespaceSelector = labels.SelectorFromSet(labels.Set(parseLabels(nsSelector)))
	}
	if svcSelector != "" {
		p.ServiceSelector = labels.SelectorFromSet(labels.Set(parseLabels(svcSelector)))
	}
	return p
}

func parseLabels(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

type opt func(*Request)

// svc is a single-stack IPv4 Service named "namespace/name" unless options say otherwise.
func svc(name string, opts ...opt) Request {
	ns, _, _ := strings.Cut(name, "/")
	r := Request{Service: name, Namespace: ns, Families: []Family{IPv4}, Policy: SingleStack}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func stack(p Policy, fams ...Family) opt {
	return func(r *Request) { r.Policy, r.Families = p, fams }
}

func ips(ss ...string) opt       { return func(r *Request) { r.IPs = addrs(ss...) } }
func inPools(ns ...string) opt   { return func(r *Request) { r.Pools = ns } }
func key(k string) opt           { return func(r *Request) { r.SharingKey = k } }
func nsLabels(s string) opt      { return func(r *Request) { r.NamespaceLabels = parseLabels(s) } }
func svcLabels(s string) opt     { return func(r *Request) { r.ServiceLabels = parseLabels(s) } }
func asInternal() opt            { return func(r *Request) { r.Internal = true } }
func withPorts(ps ...string) opt { return func(r *Request) { r.Ports = ports(ps...) } }

func ports(ps ...string) []Port {
	var out []Port
	for _, s := range ps {
		proto, num, _ := strings.Cut(s, "/")
		n := 0
		for _, c := range num {
			n = n*10 + int(c-'0')
		}
		out = append(out, Port{Protocol: proto, Port: int32(n)})
	}
	return out
}

// step is one thing done to the allocator and what a user would see.
type step struct {
	what string
	run  func(t *testing.T, a *Allocator)
}

type scenario struct {
	name  string
	pools []Pool
	steps []step
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			a := New()
			a.SetPools(sc.pools)
			for i, s := range sc.steps {
				t.Logf("step %d: %s", i, s.what)
				s.run(t, a)
				if t.Failed() {
					return
				}
			}
		})
	}
}

// alloc expects the Service to get want.
func alloc(r Request, want ...string) step {
	return allocFrom(r, "", want...)
}

// allocate allocates r and expects it to get want.
func allocate(t *testing.T, a *Allocator, r Request, want []string) Result {
	t.Helper()
	res, err := a.Allocate(r)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", r.Service, err)
	}
	if !slices.Equal(strs(res.Addrs), want) {
		t.Errorf("Allocate(%s) = %v, want %v", r.Service, strs(res.Addrs), want)
	}
	return res
}

// allocFrom expects the Service to get want from pool (not checked when pool is "").
func allocFrom(r Request, pool string, want ...string) step {
	return step{"allocate " + r.Service, func(t *testing.T, a *Allocator) {
		t.Helper()
		res := allocate(t, a, r, want)
		if pool != "" && res.Pool != pool {
			t.Errorf("Allocate(%s) pool = %q, want %q", r.Service, res.Pool, pool)
		}
		if len(res.Warnings) > 0 {
			t.Errorf("Allocate(%s) warnings = %q, want none", r.Service, res.Warnings)
		}
	}}
}

// allocWarns expects the Service to keep want, from pool, with a warning containing warning.
func allocWarns(r Request, pool, warning string, want ...string) step {
	return step{"allocate " + r.Service, func(t *testing.T, a *Allocator) {
		t.Helper()
		res, err := a.Allocate(r)
		if err != nil {
			t.Fatalf("Allocate(%s): %v", r.Service, err)
		}
		if !slices.Equal(strs(res.Addrs), want) || res.Pool != pool {
			t.Errorf("Allocate(%s) = %v from %q, want %v from %q", r.Service, strs(res.Addrs), res.Pool, want, pool)
		}
		if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, warning) }) {
			t.Errorf("Allocate(%s) warnings = %q, want one containing %q", r.Service, res.Warnings, warning)
		}
	}}
}

// allocFails expects reason, a message containing each of msgs, and the Service to keep keeps.
func allocFails(r Request, reason Reason, msgs []string, keeps ...string) step {
	return step{"allocate " + r.Service + " (fails)", func(t *testing.T, a *Allocator) {
		t.Helper()
		res, err := a.Allocate(r)
		checkErr(t, "Allocate("+r.Service+")", err, reason, msgs)
		if !slices.Equal(strs(res.Addrs), keeps) {
			t.Errorf("Allocate(%s) result = %v, want it to keep %v", r.Service, strs(res.Addrs), keeps)
		}
		if got := strs(a.Holding(r.Service)); !slices.Equal(got, keeps) {
			t.Errorf("Holding(%s) = %v, want %v", r.Service, got, keeps)
		}
	}}
}

func msg(parts ...string) []string { return parts }

func checkErr(t *testing.T, what string, err error, reason Reason, msgs []string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s error = %v, want an *Error with reason %s", what, err, reason)
	}
	if e.Reason != reason {
		t.Errorf("%s reason = %s (%s), want %s", what, e.Reason, e.Message, reason)
	}
	for _, m := range msgs {
		if !strings.Contains(e.Message, m) {
			t.Errorf("%s message = %q, want it to contain %q", what, e.Message, m)
		}
	}
}

func release(service string, freed ...string) step {
	return step{"release " + service, func(t *testing.T, a *Allocator) {
		t.Helper()
		got := strs(a.Release(service))
		slices.Sort(got)
		want := slices.Clone(freed)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Release(%s) = %v, want %v", service, got, want)
		}
	}}
}

func restore(r Request, as ...string) step {
	return step{"restore " + r.Service, func(t *testing.T, a *Allocator) {
		t.Helper()
		if err := a.Restore(r, addrs(as...)); err != nil {
			t.Fatalf("Restore(%s, %v): %v", r.Service, as, err)
		}
	}}
}

func restoreFails(r Request, reason Reason, msgs []string, as ...string) step {
	return step{"restore " + r.Service + " (fails)", func(t *testing.T, a *Allocator) {
		t.Helper()
		checkErr(t, "Restore("+r.Service+")", a.Restore(r, addrs(as...)), reason, msgs)
	}}
}

func setPools(pools ...Pool) step {
	return step{"set pools", func(t *testing.T, a *Allocator) { a.SetPools(pools) }}
}

func holding(service string, want ...string) step {
	return step{"holding " + service, func(t *testing.T, a *Allocator) {
		t.Helper()
		if got := strs(a.Holding(service)); !slices.Equal(got, want) {
			t.Errorf("Holding(%s) = %v, want %v", service, got, want)
		}
	}}
}

// counts expects the pool's capacity, allocated and available for one family.
func counts(name string, f Family, capacity, allocated, available string) step {
	return step{"status of " + name, func(t *testing.T, a *Allocator) {
		t.Helper()
		st, ok := a.PoolStatus(name)
		if !ok {
			t.Fatalf("PoolStatus(%s): unknown pool", name)
		}
		got := [3]string{st.Capacity[f], st.Allocated[f], st.Available[f]}
		if want := [3]string{capacity, allocated, available}; got != want {
			t.Errorf("PoolStatus(%s)[%s] capacity/allocated/available = %v, want %v", name, f, got, want)
		}
	}}
}
