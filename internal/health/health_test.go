package health

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStuck(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const after = time.Minute
	for _, tc := range []struct {
		name   string
		passes map[uint64]pass
		want   []string
	}{
		{"no pass under way", nil, nil},
		{"a pass within the bound", map[uint64]pass{1: {"sync", t0.Add(-59 * time.Second)}}, nil},
		{"a pass exactly at the bound", map[uint64]pass{1: {"sync", t0.Add(-after)}}, nil},
		{"a pass past the bound", map[uint64]pass{1: {"sync", t0.Add(-61 * time.Second)}},
			[]string{"sync: a pass has run for 1m1s (stuck after 1m0s)"}},
		{"one of several workers stuck: the loop once, with its longest pass", map[uint64]pass{
			1: {"services", t0.Add(-2 * time.Second)},
			2: {"services", t0.Add(-90 * time.Second)},
			3: {"services", t0.Add(-5 * time.Minute)},
		}, []string{"services: a pass has run for 5m0s (stuck after 1m0s)"}},
		{"two loops, in the order of their names", map[uint64]pass{
			1: {"sync", t0.Add(-2 * time.Minute)},
			2: {"conditions", t0.Add(-3 * time.Minute)},
		}, []string{"conditions: a pass has run for 3m0s (stuck after 1m0s)", "sync: a pass has run for 2m0s (stuck after 1m0s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stuck(t0, tc.passes, after); !slices.Equal(got, tc.want) {
				t.Errorf("stuck = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		waiting map[string]string
		want    []string
	}{
		{"everything up", map[string]string{}, nil},
		{"one part", map[string]string{"heartbeats": "listen udp 10.0.0.1:7947: bind: address already in use"},
			[]string{"heartbeats: listen udp 10.0.0.1:7947: bind: address already in use"}},
		{"several, in the order of their names", map[string]string{"caches": "not synced", "bgp": "not started"},
			[]string{"bgp: not started", "caches: not synced"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := notUp(tc.waiting); !slices.Equal(got, tc.want) {
				t.Errorf("notUp = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProbes: what the kubelet gets from /readyz and /healthz as parts come up and a pass of
// a loop runs on.
func TestProbes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(time.Minute)
	s.now = func() time.Time { return now }
	srv := httptest.NewServer(http.NewServeMux())
	mux := srv.Config.Handler.(*http.ServeMux)
	for path, h := range s.Handlers() {
		mux.Handle(path, h)
	}
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	expect := func(step, path string, code int, body string) {
		t.Helper()
		if c, b := get(path); c != code || b != body {
			t.Errorf("%s: %s = %d %q, want %d %q", step, path, c, b, code, body)
		}
	}

	s.Wait("caches", "not synced")
	s.Wait("heartbeats", "not bound")
	expect("starting", "/readyz", 503, "caches: not synced\nheartbeats: not bound")
	expect("starting", "/healthz", 200, "ok")
	s.Up("caches")
	expect("caches synced", "/readyz", 503, "heartbeats: not bound")
	s.Up("heartbeats")
	expect("every part up", "/readyz", 200, "ok")

	done := s.Pass("sync")
	now = now.Add(time.Minute)
	expect("a pass at the bound", "/healthz", 200, "ok")
	now = now.Add(time.Second)
	expect("a pass past the bound", "/healthz", 503, "sync: a pass has run for 1m1s (stuck after 1m0s)")
	expect("stuck, still ready", "/readyz", 200, "ok")
	done()
	expect("the pass ended", "/healthz", 200, "ok")
}

// TestNil: a nil Status takes every call and reports nothing.
func TestNil(t *testing.T) {
	var s *Status
	s.Wait("a", "b")
	s.Up("a")
	s.Pass("sync")()
	for path, h := range s.Handlers() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s of a nil Status: %d %s; want 200: it reports nothing", path, rec.Code, rec.Body)
		}
	}
}
