package l2

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/framework"
	"github.com/ironlb/ironlb/e2e/lab"
)

// probe GETs path on node n's speaker health address, as the kubelet's probes do.
func probe(f *framework.F, n int, path string) (int, string, error) {
	url := "http://" + net.JoinHostPort(f.NodeAddrs(n)[0].String(), "10293") + path
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// TestHeartbeatPortTakenKeepsSpeakerNotReady: a speaker that cannot bind its
// heartbeats' port (another process holds it) keeps running, live but not
// ready, with the bind error as the reason /readyz gives (what the kubelet
// shows for the pod), and answers for nothing; the addresses stay with the
// other nodes. Once the port is free it becomes ready by itself, without a
// restart, and takes part again.
func TestHeartbeatPortTakenKeepsSpeakerNotReady(t *testing.T) {
	f := framework.New(t)
	pool(f, "health", 1, nil)
	_, addrs := service(f, "web", "health", []int{1, 2, 3}, nil)
	victim := f.WaitOwner(addrs[0], "a node", func(int) bool { return true })
	name := f.SpeakerName(victim)
	if code, body, err := probe(f, victim, "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("%s before the test: /readyz %d %q %v, want 200", name, code, body, err)
	}

	if err := f.Stop(name, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	f.Cleanup(func(context.Context) {
		if !f.Alive(name) {
			_ = f.Restart(name)
		}
	})
	port := netip.AddrPortFrom(f.NodeAddrs(victim)[0], 7947)
	holder, err := lab.ListenUDP(f.NodeNS(victim), port)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := f.Restart(name); err != nil {
		t.Fatal(err)
	}

	f.Eventually(name+" says why it is not ready", 50, 200*time.Millisecond, func() error {
		code, body, err := probe(f, victim, "/readyz")
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "heartbeats:") || !strings.Contains(body, "address already in use") {
			return fmt.Errorf("/readyz %d %q %v", code, body, err)
		}
		return nil
	})
	// It stays so, running and live, while the others answer for every address.
	for i := range 10 {
		if !f.Alive(name) {
			t.Fatalf("%s exited while its heartbeats' port was taken", name)
		}
		if code, body, err := probe(f, victim, "/readyz"); err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("check %d: /readyz %d %q %v, want 503 while the port is taken", i, code, body, err)
		}
		if code, body, err := probe(f, victim, "/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("check %d: /healthz %d %q %v, want 200: the speaker is not stuck", i, code, body, err)
		}
		for _, a := range addrs {
			if n := f.Owner(a); n == victim || n == 0 {
				t.Fatalf("check %d: %s answered by node%d while node%d's speaker is not ready", i, a, n, victim)
			}
		}
		time.Sleep(300 * time.Millisecond)
	}

	holder.Close()
	f.Eventually(name+" becomes ready once the port is free", 50, 200*time.Millisecond, func() error {
		if code, body, err := probe(f, victim, "/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q %v", code, body, err)
		}
		return nil
	})
	if err := f.WaitSpeakersConverged(f.Ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		f.WaitOwner(a, "a node", func(int) bool { return true })
		reach(f, a, "endpoint=")
	}
}
