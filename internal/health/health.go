// Package health answers the kubelet's probes from what a process knows of itself: /readyz
// succeeds once every part it waits for is up, /healthz while no pass of a work loop has run
// for longer than it ever should (a loop stuck on a lock or a call that never returns).
//
// A part that is not up says why, and both endpoints print every reason, so that
// `kubectl describe pod` shows what a pod waits for.
package health

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultStuckAfter is how long one pass of a work loop may run before the process counts as
// stuck: far longer than a pass takes with tens of thousands of Services, short enough that a
// stuck process is restarted within minutes.
const DefaultStuckAfter = 3 * time.Minute

// Status is what the process reports of itself. Its zero value is not usable; a nil *Status
// is, and reports nothing (for tests and embedders that serve no probes).
type Status struct {
	stuckAfter time.Duration
	now        func() time.Time

	mu      sync.Mutex
	waiting map[string]string // part → why it is not up yet
	passes  map[uint64]pass   // passes of work loops under way
	next    uint64
}

type pass struct {
	loop  string
	began time.Time
}

// New returns a Status whose loops count as stuck after a pass of stuckAfter.
func New(stuckAfter time.Duration) *Status {
	return &Status{stuckAfter: stuckAfter, now: time.Now, waiting: map[string]string{}, passes: map[uint64]pass{}}
}

// Wait marks part as not up, for the reason why.
func (s *Status) Wait(part, why string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting[part] = why
}

// Up marks part as up.
func (s *Status) Up(part string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiting, part)
}

// Pass marks the start of a pass of loop; the function it returns marks its end. Several
// passes of one loop (its workers) may run at once.
func (s *Status) Pass(loop string) (done func()) {
	if s == nil {
		return func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := s.next
	s.passes[id] = pass{loop: loop, began: s.now()}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.passes, id)
	}
}

// Ready says whether every part is up, and else why not.
func (s *Status) Ready() (bool, []string) {
	if s == nil {
		return true, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	why := notUp(s.waiting)
	return len(why) == 0, why
}

// Live says whether no loop is stuck, and else which are.
func (s *Status) Live() (bool, []string) {
	if s == nil {
		return true, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	why := stuck(s.now(), s.passes, s.stuckAfter)
	return len(why) == 0, why
}

// Handlers are /readyz and /healthz.
func (s *Status) Handlers() map[string]http.Handler {
	return map[string]http.Handler{"/readyz": probe(s.Ready), "/healthz": probe(s.Live)}
}

func probe(check func() (bool, []string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, why := check()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, strings.Join(why, "\n"))
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
}

// notUp lists the parts not up with their reasons, in the order of their names.
func notUp(waiting map[string]string) []string {
	var out []string
	for part, why := range waiting {
		out = append(out, part+": "+why)
	}
	slices.Sort(out)
	return out
}

// stuck lists the loops with a pass that began more than after before now, each once, with
// the longest such pass.
func stuck(now time.Time, passes map[uint64]pass, after time.Duration) []string {
	longest := map[string]time.Duration{}
	for _, p := range passes {
		if d := now.Sub(p.began); d > after && d > longest[p.loop] {
			longest[p.loop] = d
		}
	}
	var out []string
	for loop, d := range longest {
		out = append(out, fmt.Sprintf("%s: a pass has run for %v (stuck after %v)", loop, d.Round(time.Second), after))
	}
	slices.Sort(out)
	return out
}
