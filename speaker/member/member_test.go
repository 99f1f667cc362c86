package member

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every member is acknowledged by every other at every size the product
// supports, the heartbeats each member sends stay within the bound whatever
// the size, and a member that crashes is dead to every other member.
//
// All members run in this one process, so at 500 the machine carries 500
// nodes' work: that size runs 5 times slower (Interval 500 ms, Timeout 2 s)
// and its rate is scaled back to the default Interval before the check. The
// protocol (who sends to whom, what a heartbeat carries) is the same.
func TestScale(t *testing.T) {
	for i, tc := range []struct {
		size int
		cfg  Config
	}{
		{3, Config{}}, {30, Config{}}, {100, Config{}},
		{500, Config{Interval: 5 * DefaultInterval, Timeout: 5 * DefaultTimeout}},
	} {
		size := tc.size
		t.Run(fmt.Sprintf("%d members", size), func(t *testing.T) {
			names := nodeNames(size)
			c := newCluster(t, byte(40+i), tc.cfg, names...)
			interval := cmpOr(tc.cfg.Interval, DefaultInterval)
			c.waitAllAlive(names...)

			// Datagrams per member per second, over two seconds at rest.
			before := make(map[string]uint64, size)
			for _, n := range names {
				before[n] = c.nodes[n].m.sent.Load()
			}
			start := time.Now()
			time.Sleep(2 * time.Second)
			elapsed := time.Since(start).Seconds()
			for _, n := range names {
				rate := float64(c.nodes[n].m.sent.Load()-before[n]) / elapsed * float64(interval) / float64(DefaultInterval)
				if rate > maxDatagramsPerSecond {
					t.Errorf("%s sent %.0f datagrams/s, want at most %d", n, rate, maxDatagramsPerSecond)
				}
			}

			victim := names[size/2]
			c.nodes[victim].crash(t)
			rest := without(names, victim)
			c.waitAllAlive(rest...)
		})
	}
}

// maxDatagramsPerSecond bounds what a member sends at the default Interval,
// whatever the cluster's size.
const maxDatagramsPerSecond = 200

func without(names []string, drop ...string) []string {
	var out []string
	for _, n := range names {
		keep := true
		for _, d := range drop {
			keep = keep && n != d
		}
		if keep {
			out = append(out, n)
		}
	}
	return out
}

// A member that leaves is dead to every other at once: Timeout is far
// beyond the wait bound, so only the leaving heartbeat, relayed, explains
// it. Restarted, it is a new incarnation that is alive again.
func TestLeaveAndRestart(t *testing.T) {
	t.Parallel()
	names := nodeNames(30)
	cfg := Config{Timeout: maxTimeout}
	c := newCluster(t, 60, cfg, names...)
	c.waitAllAlive(names...)
	old := c.nodes[names[7]].m.incarnation

	c.nodes[names[7]].leave(t)
	c.waitAllAlive(without(names, names[7])...)

	if c.start(names[7]).m.incarnation <= old {
		t.Fatalf("restarted member kept incarnation %d", old)
	}
	c.waitAllAlive(names...)
}

// Loss of every datagram to and from one member: it is isolated, and to the
// others it is dead. When the loss ends, it is back.
func TestCutOffMember(t *testing.T) {
	t.Parallel()
	names := nodeNames(30)
	c := newCluster(t, 61, Config{}, names...)
	c.waitAllAlive(names...)
	cut := names[3]
	c.nodes[cut].m.setDrop(func(string, string) bool { return true })
	waitFor(t, "cut-off member isolated", func() (bool, string) {
		v := c.view(cut)
		return v.Isolated, describe(v, nil)
	})
	c.waitAllAlive(without(names, cut)...)
	c.nodes[cut].m.setDrop(nil)
	c.waitAllAlive(names...)
}

// One-way loss: a member that can send but not receive knows it is
// isolated, and the others see it alive but isolated (so they answer for
// its addresses); a member that can receive but not send is dead to the
// others and knows it is isolated too, from the word of it in their
// vectors. Either way exactly one side may answer.
func TestOneWayLoss(t *testing.T) {
	t.Parallel()
	names := nodeNames(30)
	c := newCluster(t, 62, Config{}, names...)
	c.waitAllAlive(names...)

	deaf := names[5]
	c.nodes[deaf].m.setDrop(func(from, to string) bool { return to == deaf })
	waitFor(t, "member that cannot receive is isolated", func() (bool, string) {
		v := c.view(deaf)
		return v.Isolated, describe(v, nil)
	})
	for _, n := range without(names, deaf) {
		waitFor(t, n+" sees the deaf member alive and isolated", func() (bool, string) {
			p, ok := c.view(n).Alive[deaf]
			return ok && p.Isolated, fmt.Sprintf("%+v alive=%v", p, ok)
		})
	}
	c.nodes[deaf].m.setDrop(nil)
	c.waitAllAlive(names...)

	mute := names[9]
	c.nodes[mute].m.setDrop(func(from, to string) bool { return from == mute })
	waitFor(t, "member that cannot send is isolated", func() (bool, string) {
		v := c.view(mute)
		return v.Isolated, describe(v, nil)
	})
	c.waitAllAlive(without(names, mute)...)
	c.nodes[mute].m.setDrop(nil)
	c.waitAllAlive(names...)
}

// A new member is isolated (answers nothing) until it has heard a peer that
// has heard of it.
func TestNewMemberIsolatedUntilAcknowledged(t *testing.T) {
	t.Parallel()
	names := nodeNames(3)
	c := newCluster(t, 63, Config{}, names[:2]...)
	c.waitAllAlive(names[:2]...)
	c.addrs[names[2]] = freeAddr(t, loopback(63, 2))
	for _, n := range names[:2] {
		c.nodes[n].m.SetPeers(c.addrs)
	}
	n := c.start(names[2])
	n.m.setDrop(func(from, to string) bool { return from == names[2] })
	time.Sleep(3 * DefaultTimeout)
	if v := c.view(names[2]); !v.Isolated {
		t.Fatalf("a member no peer has heard is not isolated: %s", describe(v, names))
	}
	n.m.setDrop(nil)
	c.waitAllAlive(names...)
}

// A lone member, or one alone in its list, is never isolated: a one-node
// cluster answers for its addresses.
func TestAloneIsNotIsolated(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 64, Config{}, "solo")
	c.waitAlive("solo", "solo")
}

func TestNewRefusesBadConfig(t *testing.T) {
	ok := Config{Node: "a", Bind: freeAddr(t, loopback(65, 0)), Key: testKey}
	for name, mutate := range map[string]func(*Config){
		"no node":            func(c *Config) { c.Node = "" },
		"no address":         func(c *Config) { c.Bind = netip.AddrPort{} },
		"no key":             func(c *Config) { c.Key = nil },
		"timeout < 3 ticks":  func(c *Config) { c.Interval, c.Timeout = time.Second, time.Second },
		"timeout too long":   func(c *Config) { c.Timeout = 20 * time.Second },
		"fanout below ring":  func(c *Config) { c.Fanout = 2 },
		"interval below 1ms": func(c *Config) { c.Interval = time.Microsecond },
	} {
		cfg := ok
		mutate(&cfg)
		if m, err := New(cfg); err == nil {
			m.conn.Close()
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	m, err := New(ok)
	if err != nil {
		t.Fatalf("New(%+v): %v", ok, err)
	}
	m.conn.Close()
}

// A member whose process stops for longer than the others wait (here its
// lock is held, so it neither sends nor reads, as under SIGSTOP or CPU
// starvation) may be counted dead and have its addresses taken. Its gate
// shuts by itself while it is silent; when it runs again it cuts itself
// off, holds for a Timeout so that the speaker drops what it answers, and
// answers again only once it is heard.
func TestPausedMemberAnswersNothingUntilHeardAgain(t *testing.T) {
	t.Parallel()
	for _, size := range []int{3, 30} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			names := nodeNames(size)
			c := newCluster(t, byte(70+size%10), Config{}, names...)
			c.waitAllAlive(names...)
			paused := c.nodes[names[1]].m
			if !paused.Answerable() {
				t.Fatal("a connected member is not answerable")
			}
			paused.mu.Lock()
			time.Sleep(paused.lapse() + 20*time.Millisecond)
			shutWhilePaused := !paused.Answerable()
			time.Sleep(2*paused.timeout - paused.lapse())
			paused.mu.Unlock()
			resumed := time.Now()
			if !shutWhilePaused {
				t.Error("the gate stayed open while the member was silent for longer than a lapse")
			}
			var sawIsolated bool
			var openedAfter time.Duration
			for d := time.Duration(0); d < 5*time.Second; d = time.Since(resumed) {
				v := paused.View()
				sawIsolated = sawIsolated || v.Isolated
				if paused.Answerable() {
					if v.Isolated {
						t.Fatalf("answerable %v after resuming while still cut off", d)
					}
					openedAfter = d
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			if !sawIsolated {
				t.Error("the member never cut itself off after the pause")
			}
			if openedAfter < paused.timeout-paused.interval {
				t.Errorf("answerable again %v after resuming, before its hold (a Timeout, %v) could have ended", openedAfter, paused.timeout)
			}
			c.waitAllAlive(names...)
		})
	}
}

// When a member's heartbeats stop both ways, it stops counting itself
// heard (Heard, asked before every reply) before any peer counts it dead:
// the owner goes silent before another node takes over, however its timers
// run.
func TestCutOffMemberStopsBeingHeardBeforeAnyPeerCountsItDead(t *testing.T) {
	t.Parallel()
	for _, size := range []int{3, 30} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			names := nodeNames(size)
			c := newCluster(t, byte(80+size%10), Config{}, names...)
			c.waitAllAlive(names...)
			cut := c.nodes[names[2]].m
			if !cut.Heard() {
				t.Fatal("a connected member does not count itself heard")
			}
			cut.setDrop(func(string, string) bool { return true })
			began := time.Now()
			var unheard, dead time.Duration
			for d := time.Duration(0); d < 3*time.Second && dead == 0; d = time.Since(began) {
				if unheard == 0 && !cut.Heard() {
					unheard = d
				}
				for _, name := range names {
					if _, ok := c.view(name).Alive[names[2]]; name != names[2] && !ok && dead == 0 {
						dead = d
					}
				}
				time.Sleep(time.Millisecond)
			}
			switch {
			case dead == 0:
				t.Fatal("no peer counted the cut-off member dead")
			case unheard == 0 || unheard >= dead:
				t.Errorf("the cut-off member counted itself heard until %v, but a peer counted it dead at %v", unheard, dead)
			}
			cut.setDrop(nil)
			c.waitAllAlive(names...)
			waitFor(t, "heard again", func() (bool, string) { return cut.Heard(), "" })
		})
	}
}

// A member cut off only for an instant (its peers' vectors a little late on
// a busy machine) has said so in its heartbeats, and peers that got them
// take its addresses. It holds itself cut off, answering nothing, for a
// Timeout from the cut however soon the heartbeats flow again, so that it
// never answers next to the new owners.
func TestBrieflyCutOffMemberHoldsItselfCutOff(t *testing.T) {
	t.Parallel()
	names := nodeNames(3)
	c := newCluster(t, 63, Config{}, names...)
	c.waitAllAlive(names...)
	cut := c.nodes[names[1]].m
	cutsBefore := testutil.ToFloat64(cuts)
	cut.setDrop(func(from, to string) bool { return to == names[1] })
	waitFor(t, "the deaf member is cut off", func() (bool, string) {
		v := cut.View()
		return v.Isolated, describe(v, nil)
	})
	// The hold the member set when it decided the cut, read from the
	// member itself rather than from when this poll saw it, so that a late
	// poll on a busy machine cannot make the test wrong either way.
	seen := time.Now()
	held := time.Unix(0, cut.heldUntil.Load())
	if !held.After(seen) || held.Sub(seen) > DefaultTimeout {
		t.Fatalf("cut off with a hold until %v, %v from when the cut was seen; want a hold of up to a Timeout (%v) still running",
			held.Format(time.StampMilli), held.Sub(seen).Round(time.Millisecond), DefaultTimeout)
	}
	if got := testutil.ToFloat64(cuts); got <= cutsBefore {
		t.Errorf("ironlb_speaker_heartbeat_cuts_total %v after the cut, was %v", got, cutsBefore)
	}
	cut.setDrop(nil)
	// Until the hold ends (a few ms spare for the last check's own clock).
	for until := held.Add(-5 * time.Millisecond); time.Now().Before(until); time.Sleep(time.Millisecond) {
		if cut.Answerable() && cut.Heard() {
			t.Fatalf("answering again %v before its hold ends", time.Until(held).Round(time.Millisecond))
		}
		if !cut.View().Isolated {
			t.Fatalf("connected again %v before its hold ends", time.Until(held).Round(time.Millisecond))
		}
	}
	c.waitAllAlive(names...)
	waitFor(t, "answering again", func() (bool, string) { return cut.Answerable() && cut.Heard(), "" })
}

// A member that leaves tells every member itself, not only the peers it
// sends to: with every other datagram lost, so that nothing is relayed, all
// of them still see it gone long before the Timeout (10 s here) would.
func TestLeavingReachesEveryMemberDirectly(t *testing.T) {
	t.Parallel()
	names := nodeNames(30)
	c := newCluster(t, 64, Config{Timeout: maxTimeout}, names...)
	c.waitAllAlive(names...)
	leaver := names[7]
	others := without(names, leaver)
	for _, n := range others {
		c.nodes[n].m.setDrop(func(from, _ string) bool { return from != leaver })
	}
	c.nodes[leaver].leave(t)
	deadline := time.Now().Add(maxTimeout / 5)
	for _, n := range others {
		for {
			if _, alive := c.view(n).Alive[leaver]; !alive {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still counts %s alive %v after it left, with relaying impossible", n, leaver, maxTimeout/5)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// A member that abstains (just joined, or back from a cut) is seen by every
// other as alive and isolated, so none ranks an address to it, while its own
// view stays connected; when it stops abstaining, all see it plain again.
func TestAbstainingMemberIsCountedOut(t *testing.T) {
	t.Parallel()
	names := nodeNames(30)
	c := newCluster(t, 65, Config{}, names...)
	c.waitAllAlive(names...)
	x := names[11]
	seenIsolated := func(want bool) {
		t.Helper()
		for _, n := range without(names, x) {
			waitFor(t, fmt.Sprintf("%s sees %s isolated=%v", n, x, want), func() (bool, string) {
				p, ok := c.view(n).Alive[x]
				return ok && p.Isolated == want, fmt.Sprintf("%+v alive=%v", p, ok)
			})
		}
	}
	c.nodes[x].m.SetAbstain(true)
	seenIsolated(true)
	if v := c.view(x); v.Isolated {
		t.Errorf("abstaining made %s's own view isolated", x)
	}
	c.nodes[x].m.SetAbstain(false)
	seenIsolated(false)
}
