package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider"
)

// otherManager is the field manager of the test's own load-balancer controller.
const otherManager = "other-lb"

// A seen is one version of a Service, as a watch delivered it.
type seen struct {
	rv     int64
	at     time.Time
	ips    string
	reason string
	msg    string
}

// versions records every version of a Service from the one it is at now, until the test ends.
type versions struct {
	mu  sync.Mutex
	all []seen
}

func (e *env) watchVersions(key string) *versions {
	e.t.Helper()
	ns, name := splitKey(key)
	svc := e.get(key)
	vs := &versions{all: []seen{versionOf(svc)}}
	w, err := e.client.CoreV1().Services(ns).Watch(e.ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: svc.ResourceVersion,
	})
	if err != nil {
		e.t.Fatalf("watch Service %s: %v", key, err)
	}
	e.t.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			if s, ok := ev.Object.(*v1.Service); ok {
				vs.mu.Lock()
				vs.all = append(vs.all, versionOf(s))
				vs.mu.Unlock()
			}
		}
	}()
	return vs
}

func versionOf(svc *v1.Service) seen {
	rv, _ := strconv.ParseInt(svc.ResourceVersion, 10, 64)
	s := seen{rv: rv, at: time.Now(), ips: strings.Join(ingressIPs(svc), ",")}
	if c := allocated(svc); c != nil {
		s.reason, s.msg = c.Reason, c.Message
	}
	return s
}

// upTo returns the versions up to rv, once the watch has delivered it.
func (vs *versions) upTo(e *env, rv string) []seen {
	e.t.Helper()
	last, _ := strconv.ParseInt(rv, 10, 64)
	var out []seen
	e.eventually("the watch to reach version "+rv, func() (bool, string) {
		vs.mu.Lock()
		defer vs.mu.Unlock()
		out = out[:0]
		for _, s := range vs.all {
			if s.rv <= last {
				out = append(out, s)
			}
		}
		reached := len(vs.all) > 0 && vs.all[len(vs.all)-1].rv >= last
		return reached, fmt.Sprintf("%d versions seen", len(vs.all))
	})
	return out
}

// after returns the first version later than rv that satisfies ok.
func (vs *versions) after(rv string, ok func(seen) bool) (seen, bool) {
	first, _ := strconv.ParseInt(rv, 10, 64)
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, s := range vs.all {
		if s.rv > first && ok(s) {
			return s, true
		}
	}
	return seen{}, false
}

// writesOf counts the versions in which the ingress turned into ips: the writes of its writer.
func writesOf(vs []seen, ips string) int {
	n := 0
	for i := 1; i < len(vs); i++ {
		if vs[i].ips == ips && vs[i-1].ips != ips {
			n++
		}
	}
	return n
}

// updateStatusAs writes the Service's ingress the way most load-balancer controllers do: an
// update of the status subresource, under manager.
func (e *env) updateStatusAs(manager, key string, ips ...string) error {
	ns, name := splitKey(key)
	for {
		svc, err := e.client.CoreV1().Services(ns).Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		svc.Status.LoadBalancer.Ingress = nil
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
		_, err = e.client.CoreV1().Services(ns).UpdateStatus(e.ctx, svc, metav1.UpdateOptions{FieldManager: manager})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}

// applyStatusAs writes the Service's ingress with a forced server-side apply under manager.
func (e *env) applyStatusAs(manager, key, ip string) error {
	ns, name := splitKey(key)
	ac := corev1ac.Service(name, ns).WithStatus(corev1ac.ServiceStatus().WithLoadBalancer(corev1ac.LoadBalancerStatus().
		WithIngress(corev1ac.LoadBalancerIngress().WithIP(ip).WithIPMode(v1.LoadBalancerIPModeVIP))))
	_, err := e.client.CoreV1().Services(ns).ApplyStatus(e.ctx, ac, metav1.ApplyOptions{FieldManager: manager, Force: true})
	return err
}

// writeEvery calls write with a new address of 198.51.<subnet>.0/24 every 200 ms for d, and
// returns once it stopped.
func writeEvery(ctx context.Context, d time.Duration, subnet int, write func(ip string) error) error {
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		if err := write(fmt.Sprintf("198.51.%d.%d", subnet, i%250+1)); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// conflictWarnings returns the ConflictingController events on the Service and how many times
// they were reported.
func (e *env) conflictWarnings(key string) (msgs []string, count int32) {
	ns, name := splitKey(key)
	for _, ev := range e.events(ns, name) {
		if ev.Reason == provider.ReasonConflictingController {
			if ev.Type != v1.EventTypeWarning {
				e.t.Errorf("%s: event %s is of type %s, want Warning", key, ev.Reason, ev.Type)
			}
			msgs = append(msgs, ev.Message)
			count += max(ev.Count, 1)
		}
	}
	return msgs, count
}

// Another controller writes status.loadBalancer of Services ironlb handles, one by updates of
// the status subresource and one by server-side apply, every 200 ms for 10 s: ironlb does not
// write the address back while it does, says so in its condition and in one Warning event, keeps
// the address, also across a leader change, and takes over once the other writer has been quiet
// for provider.QuietPeriod. A writer that gives the field up is taken over from at once.
func TestAnotherStatusWriterIsNotFoughtAndIsTakenOverFromWhenGone(t *testing.T) {
	e := newEnv(t)
	e.pool("public", spec("172.31.123.0/28"))
	first := e.startCCM("first")

	keys := []string{"update-style", "apply-style", "gives-up"}
	own := map[string]string{}
	watched := map[string]*versions{}
	for _, key := range keys {
		e.service(key)
	}
	for _, key := range keys {
		own[key] = strings.Join(ingressIPs(e.waitAllocated(key, 1)), ",")
		watched[key] = e.watchVersions(key)
	}

	const writing = 10 * time.Second
	type stopped struct {
		key, rv string
		at      time.Time
		err     error
	}
	done := make(chan stopped, len(keys))
	// Each writer writes addresses of its own, so that no two Services show the same one.
	write := func(key string, d time.Duration, w func(ip string) error, then func() error) {
		err := writeEvery(e.ctx, d, 100+slices.Index(keys, key), w)
		rv, at := "", time.Now()
		if err == nil {
			if svc, gerr := e.client.CoreV1().Services("default").Get(e.ctx, key, metav1.GetOptions{}); gerr == nil {
				rv = svc.ResourceVersion
			} else {
				err = gerr
			}
		}
		if err == nil && then != nil {
			err = then()
		}
		done <- stopped{key: key, rv: rv, at: at, err: err}
	}
	go write("update-style", writing, func(ip string) error { return e.updateStatusAs(otherManager, "update-style", ip) }, nil)
	go write("apply-style", writing, func(ip string) error { return e.applyStatusAs(otherManager, "apply-style", ip) }, nil)
	// This one writes for 3 s, then clears the ingress: its managedFields entry gives the field up.
	go write("gives-up", 3*time.Second, func(ip string) error { return e.updateStatusAs(otherManager, "gives-up", ip) },
		func() error { return e.updateStatusAs(otherManager, "gives-up") })

	// A new leader in the middle of it reads what ironlb reserved from its record, not from the
	// status the other writer wrote, and does not write either.
	time.Sleep(4 * time.Second)
	first.Signal(syscall.SIGKILL)
	e.startCCM("second")

	stops := map[string]stopped{}
	for range keys {
		s := <-done
		if s.err != nil {
			t.Fatalf("%s: the other writer failed: %v", s.key, s.err)
		}
		stops[s.key] = s
	}

	for _, key := range keys {
		// While the other writer was active, ironlb wrote its address at most once (the test
		// starts the writer after ironlb's first write, so it should not need to write at all).
		vs := watched[key].upTo(e, stops[key].rv)
		n := writesOf(vs, own[key])
		if n > 1 {
			t.Errorf("%s: ironlb wrote its address %s %d times while %s wrote the status (%d versions)", key, own[key], n, otherManager, len(vs))
		}
		t.Logf("%s: %d versions while %s wrote, %d of them ironlb's address", key, len(vs), otherManager, n)
		conflict := false
		for _, s := range vs {
			if s.reason == provider.ReasonConflictingController && strings.Contains(s.msg, otherManager) && strings.Contains(s.msg, own[key]) {
				conflict = true
			}
		}
		if !conflict {
			t.Errorf("%s: no condition %s naming %s and the kept address %s while it wrote; last: %s: %s",
				key, provider.ReasonConflictingController, otherManager, own[key], vs[len(vs)-1].reason, vs[len(vs)-1].msg)
		}
	}
	for _, key := range keys {
		e.eventually(key+": the Warning event", func() (bool, string) {
			msgs, _ := e.conflictWarnings(key)
			return len(msgs) > 0, "no event"
		})
	}

	// The writer that gave the field up is taken over from at once, well before the quiet period.
	gaveUp := stops["gives-up"]
	e.within(provider.QuietPeriod/2, "gives-up: ironlb to take over", func() (bool, string) {
		svc := e.get("gives-up")
		c := allocated(svc)
		return strings.Join(ingressIPs(svc), ",") == own["gives-up"] && c != nil && c.Reason == "Allocated", fmt.Sprintf("ingress %v, %s", ingressIPs(svc), condString(c))
	})

	// The others are taken over from once they have been quiet for the quiet period, not before.
	for _, key := range []string{"update-style", "apply-style"} {
		e.within(provider.QuietPeriod+waitTimeout, key+": ironlb to take over", func() (bool, string) {
			svc := e.get(key)
			c := allocated(svc)
			return strings.Join(ingressIPs(svc), ",") == own[key] && c != nil && c.Status == metav1.ConditionTrue && c.Reason == "Allocated",
				fmt.Sprintf("ingress %v, %s", ingressIPs(svc), condString(c))
		})
		back, ok := watched[key].after(stops[key].rv, func(s seen) bool { return s.ips == own[key] })
		if !ok {
			t.Fatalf("%s: the watch did not see ironlb take over", key)
		}
		// managedFields times count whole seconds.
		quiet := back.at.Sub(stops[key].at)
		if quiet < provider.QuietPeriod-2*time.Second {
			t.Errorf("%s: ironlb took over %v after the other writer stopped, before the quiet period of %v", key, quiet, provider.QuietPeriod)
		}
		t.Logf("%s: ironlb took over %v after the other writer stopped", key, quiet.Round(100*time.Millisecond))
	}
	if back, ok := watched["gives-up"].after(gaveUp.rv, func(s seen) bool { return s.ips == own["gives-up"] }); !ok {
		t.Errorf("gives-up: the watch did not see ironlb take over")
	} else if took := back.at.Sub(gaveUp.at); took > provider.QuietPeriod/2 {
		t.Errorf("gives-up: ironlb took over %v after the other writer gave the field up", took)
	} else {
		t.Logf("gives-up: ironlb took over %v after the other writer gave the field up", took.Round(10*time.Millisecond))
	}

	for _, key := range keys {
		// ironlb owns the ingress again; the other writer owns none of it.
		svc := e.get(key)
		if !strings.Contains(ownedBy(svc, v1alpha1.FieldManagerCCM), `"f:ingress"`) {
			t.Errorf("%s: %s does not own the ingress after taking over: %s", key, v1alpha1.FieldManagerCCM, ownedBy(svc, v1alpha1.FieldManagerCCM))
		}
		if owned := ownedBy(svc, otherManager); strings.Contains(owned, `"f:ingress"`) {
			t.Errorf("%s: %s still owns the ingress: %s", key, otherManager, owned)
		}
		// One Warning for the whole conflict, naming the other writer, not one per sync.
		msgs, count := e.conflictWarnings(key)
		if count != 1 || !strings.Contains(msgs[0], otherManager) {
			t.Errorf("%s: %d %s events (%q), want one naming %s", key, count, provider.ReasonConflictingController, msgs, otherManager)
		}
	}
}
